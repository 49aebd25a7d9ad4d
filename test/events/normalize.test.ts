import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { normalize, type NormalizeOptions } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import { unpickle } from '../../src/python/unpickle.js';
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  type PyDict,
} from '../../src/python/pyvalues.js';

const utc: NormalizeOptions = { zone: resolveZone('UTC'), maxStringLength: 64 };

function dict(entries: Record<string, unknown>): PyDict {
  return Object.assign(Object.create(null) as PyDict, entries);
}

function ok(raw: unknown, options = utc) {
  const outcome = normalize(raw, options);
  if (!outcome.ok) throw new Error(`rejected: ${outcome.reason} ${outcome.detail}`);
  return outcome.event;
}

function reason(raw: unknown, options = utc) {
  const outcome = normalize(raw, options);
  if (outcome.ok) throw new Error('accepted');
  return outcome.reason;
}

describe('normalize', () => {
  it('reads a full stop event', () => {
    const event = ok(
      dict({
        event: 'stop_section',
        type: 'TestSection',
        seq_num: 7,
        parent_seq_num: 5,
        id: 'test',
        name: 'test',
        starttime: new PyDateTime(2024, 5, 1, 12, 0, 0, 250_000, new PyTimezone(0, undefined)),
        stoptime: new PyDateTime(2024, 5, 1, 12, 0, 3, 500_123, new PyTimezone(0, undefined)),
        runtime: 3.250123,
        result: new PyObject(
          'pyats.results',
          'Failed',
          [],
          dict({ value: 'failed', reason: 'no bgp neighbor' }),
        ),
        logs: dict({ file: 'TaskLog.Task-1', begin: 100, size: 20 }),
        xref: dict({ file: '/scripts/bgp.py', line: 42 }),
      }),
    );
    expect(event).toEqual({
      phase: 'stop',
      event: 'stop_section',
      type: 'TestSection',
      seqNum: 7,
      parentSeqNum: 5,
      id: 'test',
      name: 'test',
      startTime: Date.UTC(2024, 4, 1, 12, 0, 0, 250),
      stopTime: Date.UTC(2024, 4, 1, 12, 0, 3, 500) + 0.123,
      runtime: 3.250123,
      result: { value: 'failed', reason: 'no bgp neighbor' },
      logfile: 'TaskLog.Task-1',
      logRange: { file: 'TaskLog.Task-1', begin: 100, size: 20 },
      xref: { file: '/scripts/bgp.py', line: 42 },
    });
  });

  it("keeps a stop's log range beside the absolute logfile, as pyATS 23.2 sends both", () => {
    const stop = realEvent('stop_section', 'ExampleTask.TcError.t');
    expect(stop.logfile).toMatch(/^\/tmp\/rp2\/.*\/TaskLog\.ExampleTask$/);
    expect(stop.logRange).toMatchObject({ file: 'TaskLog.ExampleTask' });
    expect(stop.logRange?.size).toBeGreaterThan(0);
    // A start carries `begin` only: no range, and nothing reported as dropped.
    const drops: string[] = [];
    const start = normalize(
      dict({ event: 'start_section', seq_num: 3, logs: dict({ file: 'TaskLog.T', begin: 10 }) }),
      { zone: resolveZone('UTC'), maxStringLength: 64 },
      (reason) => drops.push(reason),
    );
    expect(start.ok).toBe(true);
    expect(start.ok ? start.event.logRange : 'refused').toBeUndefined();
    expect(drops).toEqual([]);
  });

  it('drops a log range whose begin or size is no byte count, and keeps the file', () => {
    for (const bad of [-1, 1.5, 'x']) {
      const drops: string[] = [];
      const outcome = normalize(
        dict({ event: 'stop_section', seq_num: 3, logs: dict({ file: 'TaskLog.T', begin: 0, size: bad }) }),
        { zone: resolveZone('UTC'), maxStringLength: 64 },
        (reason) => drops.push(reason),
      );
      expect(outcome.ok && outcome.event).toMatchObject({ logfile: 'TaskLog.T' });
      expect(outcome.ok ? outcome.event.logRange : 'refused').toBeUndefined();
      expect(drops).toEqual(['bad_field_type']);
    }
  });

  it("keeps the tail of a bridge's log_excerpt", () => {
    const long = 'x'.repeat(70 * 1024) + 'END';
    const outcome = normalize(dict({ event: 'stop_section', seq_num: 3, log_excerpt: long }), {
      zone: resolveZone('UTC'),
      maxStringLength: 64,
    });
    const excerpt = outcome.ok ? outcome.event.logExcerpt : undefined;
    expect(excerpt?.length).toBe(64 * 1024);
    expect(excerpt?.endsWith('END')).toBe(true);
  });

  it('derives the type from the event name when absent', () => {
    expect(ok(dict({ event: 'init_task', seq_num: 2 })).type).toBe('Task');
    expect(ok(dict({ event: 'start_testsuite', seq_num: 1 })).type).toBe('TestSuite');
    expect(ok(dict({ event: 'start_fancything', seq_num: 3 })).type).toBe('Fancything');
  });

  it('applies the job zone to naive datetimes and offset-less ISO strings', () => {
    const paris: NormalizeOptions = { zone: resolveZone('Europe/Paris'), maxStringLength: 64 };
    const naive = new PyDateTime(2024, 7, 1, 14, 0, 0, 0);
    expect(ok(dict({ event: 'start_task', seq_num: 1, starttime: naive }), paris).startTime).toBe(
      Date.UTC(2024, 6, 1, 12),
    );
    const winter = new PyDateTime(2024, 1, 1, 14, 0, 0, 0);
    expect(ok(dict({ event: 'start_task', seq_num: 1, starttime: winter }), paris).startTime).toBe(
      Date.UTC(2024, 0, 1, 13),
    );
    expect(
      ok(dict({ event: 'start_task', seq_num: 1, starttime: '2024-07-01T14:00:00.000250' }), paris).startTime,
    ).toBe(Date.UTC(2024, 6, 1, 12) + 0.25);
    const plus530: NormalizeOptions = { zone: resolveZone('+05:30'), maxStringLength: 64 };
    expect(ok(dict({ event: 'start_task', seq_num: 1, starttime: naive }), plus530).startTime).toBe(
      Date.UTC(2024, 6, 1, 8, 30),
    );
  });

  it('reads tz-aware datetimes, ISO strings with offsets, epoch seconds and epoch ms', () => {
    const expected = Date.UTC(2024, 6, 1, 12, 0, 0, 500);
    const cases: unknown[] = [
      new PyDateTime(2024, 7, 1, 14, 0, 0, 500_000, new PyTimezone(7200, undefined)),
      new PyDateTime(2024, 7, 1, 14, 0, 0, 500_000, new PyTimezone(undefined, 'Europe/Paris')),
      '2024-07-01T14:00:00.5+02:00',
      '2024-07-01 12:00:00.500Z',
      expected / 1000,
      expected,
      BigInt(expected),
    ];
    for (const starttime of cases) {
      expect(ok(dict({ event: 'start_task', seq_num: 1, starttime })).startTime).toBeCloseTo(expected, 3);
    }
  });

  it('reads results from strings, dicts, objects, class references and reduce arguments', () => {
    const results: Array<[unknown, string]> = [
      ['passed', 'passed'],
      ['Passx', 'passx'],
      [dict({ value: 'errored', reason: 'boom' }), 'errored'],
      [
        new PyObject('pyats.results.result', 'TestResult', [], dict({ value: 'blocked', code: 5 })),
        'blocked',
      ],
      [new PyGlobal('pyats.results', 'Skipped'), 'skipped'],
      [new PyObject('pyats.results', 'from_str', ['aborted']), 'aborted'],
      [new PyObject('pyats.results', 'Failed', [], undefined), 'failed'],
    ];
    for (const [result, value] of results) {
      expect(ok(dict({ event: 'stop_section', seq_num: 1, result })).result?.value).toBe(value);
    }
    expect(
      ok(dict({ event: 'stop_section', seq_num: 1, result: dict({ value: 'errored', reason: 'boom' }) }))
        .result,
    ).toEqual({ value: 'errored', reason: 'boom' });
  });

  it('accepts a timedelta runtime and numeric-string seq_nums', () => {
    const event = ok(dict({ event: 'stop_step', seq_num: '12', runtime: new PyTimedelta(0, 3, 500_000) }));
    expect(event.seqNum).toBe(12);
    expect(event.runtime).toBe(3.5);
  });

  it('cuts long strings', () => {
    const event = ok(dict({ event: 'start_step', seq_num: 1, name: 'x'.repeat(1000) }));
    expect(event.name).toHaveLength(64);
  });

  it('rejects bad input with a stable reason', () => {
    expect(reason('start_task')).toBe('not_a_dict');
    expect(reason([1, 2])).toBe('not_a_dict');
    expect(reason(null)).toBe('not_a_dict');
    expect(reason(dict({ seq_num: 1 }))).toBe('missing_event');
    expect(reason(dict({ event: 5, seq_num: 1 }))).toBe('bad_field_type');
    expect(reason(dict({ event: 'finish_task', seq_num: 1 }))).toBe('unknown_event');
    expect(reason(dict({ event: 'start_task' }))).toBe('bad_seq_num');
    expect(reason(dict({ event: 'start_task', seq_num: -1 }))).toBe('bad_seq_num');
    expect(reason(dict({ event: 'start_task', seq_num: 1.5 }))).toBe('bad_seq_num');
    expect(reason(dict({ event: 'start_task', seq_num: 1, parent_seq_num: 'x' }))).toBe('bad_parent_seq_num');
    expect(reason(dict({ event: 'start_task', seq_num: 1, starttime: 'yesterday' }))).toBe('bad_time');
    expect(reason(dict({ event: 'start_task', seq_num: 1, starttime: Number.NaN }))).toBe('bad_time');
    expect(reason(dict({ event: 'start_task', seq_num: 1, starttime: 1e20 }))).toBe('bad_time');
    expect(reason(dict({ event: 'start_task', seq_num: 1, starttime: -5 }))).toBe('bad_time');
    expect(reason(dict({ event: 'stop_task', seq_num: 1, runtime: -1 }))).toBe('bad_runtime');
    expect(reason(dict({ event: 'stop_task', seq_num: 1, runtime: Number.POSITIVE_INFINITY }))).toBe(
      'bad_runtime',
    );
    expect(reason(dict({ event: 'stop_task', seq_num: 1, runtime: 'slow' }))).toBe('bad_runtime');
    expect(reason(dict({ event: 'stop_task', seq_num: 1, result: 'great' }))).toBe('bad_result');
    expect(reason(dict({ event: 'stop_task', seq_num: 1, result: 3 }))).toBe('bad_result');
    expect(reason(dict({ event: 'start_task', seq_num: 1, name: dict({}) }))).toBe('bad_field_type');
    expect(
      reason(
        dict({
          event: 'stop_task',
          seq_num: 1,
          starttime: '2024-01-01T00:00:02Z',
          stoptime: '2024-01-01T00:00:01Z',
        }),
      ),
    ).toBe('bad_time');
  });

  it('treats __proto__ and constructor keys as plain data', () => {
    const raw = dict({
      event: 'start_task',
      seq_num: 1,
      ['__proto__']: dict({ polluted: true }),
      constructor: 'x',
    });
    expect(ok(raw).seqNum).toBe(1);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('never reads inherited keys of a JSON-style dict', () => {
    // An object whose prototype carries the fields (what `obj['__proto__'] = {...}` builds) is not a dict.
    const polluted = Object.create({ event: 'start_task', seq_num: 1 }) as Record<string, unknown>;
    expect(reason(polluted)).toBe('not_a_dict');
    // JSON.parse keeps `__proto__` as an own key, and inherited names such as `constructor` and `toString`
    // are never taken for fields.
    const parsed = JSON.parse(
      '{"event":"stop_task","seq_num":3,"__proto__":{"id":"evil","result":"passed"},"constructor":1}',
    ) as unknown;
    const event = ok(parsed);
    expect(event).toEqual({ phase: 'stop', event: 'stop_task', type: 'Task', seqNum: 3 });
    const inherited = JSON.parse('{"event":"stop_task","seq_num":3,"result":{"reason":"x"}}') as unknown;
    // `value` / `name` are not own keys of the result dict, so there is no result (not Object's `name`).
    expect(reason(inherited)).toBe('bad_result');
  });

  it('makes every string well-formed and cuts huge ones, the event name and derived type included', () => {
    const loneSurrogates = dict({
      event: 'start_section',
      seq_num: 1,
      id: 'a\ud800b',
      name: 'x\udfff',
      logfile: '\ud83d',
    });
    expect(ok(loneSurrogates)).toMatchObject({ id: 'a\ufffdb', name: 'x\ufffd', logfile: '\ufffd' });
    // A cut through a surrogate pair must not leave half of it.
    const emoji = ok(dict({ event: 'start_step', seq_num: 1, name: `${'x'.repeat(63)}\u{1F600}` }));
    expect(emoji.name).toHaveLength(64);
    expect((emoji.name as string & { isWellFormed(): boolean }).isWellFormed()).toBe(true);
    const huge = 'y'.repeat(5_000_000);
    const event = ok(dict({ event: `start_${huge}`, seq_num: 1, id: huge, xref: `${huge}:12` }));
    expect(event.event).toHaveLength(64);
    expect(event.type).toHaveLength(64);
    expect(event.id).toHaveLength(64);
  });

  it('never throws, whatever the dict holds', () => {
    const hostile: unknown[] = [
      undefined,
      Symbol('x'),
      () => 1,
      new Uint8Array(4),
      dict({ event: 'start_task', seq_num: 1, starttime: new PyDateTime(99999, 99, 99, 99, 99, 99, 9e9) }),
      dict({ event: 'start_task', seq_num: 1, starttime: new PyDateTime(NaN, 1, 1, 0, 0, 0, 0) }),
      dict({
        event: 'start_task',
        seq_num: 1,
        starttime: new PyDateTime(2024, 1, 1, 0, 0, 0, 0, new PyTimezone(undefined, 'No/Such_Zone')),
      }),
      dict({ event: 'stop_task', seq_num: 1, runtime: new PyTimedelta(1e308, 1e308, 0) }),
      dict({ event: 'stop_task', seq_num: 1, result: new PyObject('m', 'C', [], new PyObject('m', 'C')) }),
      dict({ event: 'start_task', seq_num: 2n ** 80n }),
      dict({ event: 'start_task', seq_num: 1, id: Symbol('x') }),
      dict({ event: 'start_task', seq_num: 1, xref: dict({ file: 5, line: -3n }) }),
    ];
    for (const raw of hostile) {
      const outcome = normalize(raw, utc);
      expect(typeof outcome.ok).toBe('boolean');
      expect(normalize(raw, utc, () => undefined).ok).toBeTypeOf('boolean');
    }
  });

  describe('with a field drop handler', () => {
    function lenient(raw: unknown) {
      const dropped: Array<[string, string]> = [];
      const outcome = normalize(raw, utc, (why, detail) => dropped.push([why, detail]));
      return { outcome, dropped, reasons: dropped.map(([why]) => why) };
    }

    it('keeps the event without the bad descriptive fields and reports each', () => {
      const { outcome, reasons } = lenient(
        dict({
          event: 'stop_testcase',
          type: ['Testcase'],
          seq_num: 4,
          parent_seq_num: 2,
          id: dict({}),
          name: 'tc',
          starttime: Number.NaN,
          stoptime: -1,
          runtime: -3,
          result: 'passed',
          logs: 'TaskLog',
          xref: 42,
        }),
      );
      expect(outcome).toEqual({
        ok: true,
        event: {
          phase: 'stop',
          event: 'stop_testcase',
          type: 'Testcase',
          seqNum: 4,
          parentSeqNum: 2,
          name: 'tc',
          result: { value: 'passed' },
        },
      });
      expect(reasons).toEqual([
        'bad_field_type',
        'bad_field_type',
        'bad_time',
        'bad_time',
        'bad_runtime',
        'bad_field_type',
        'bad_field_type',
      ]);
    });

    it('drops a stoptime before the starttime and absurd runtimes and times', () => {
      const start = '2024-01-01T00:00:02Z';
      const { outcome, reasons } = lenient(
        dict({
          event: 'stop_task',
          seq_num: 1,
          starttime: start,
          stoptime: '2024-01-01T00:00:01Z',
          runtime: 1e12,
        }),
      );
      expect(outcome.ok && outcome.event.startTime).toBe(Date.UTC(2024, 0, 1, 0, 0, 2));
      expect(outcome.ok && outcome.event.stopTime).toBeUndefined();
      expect(reasons).toEqual(['bad_time', 'bad_runtime']);
      expect(lenient(dict({ event: 'start_task', seq_num: 1, starttime: 1e20 })).reasons).toEqual([
        'bad_time',
      ]);
      expect(
        lenient(dict({ event: 'start_task', seq_num: 1, starttime: '2024-13-45T99:00:00' })).reasons,
      ).toEqual(['bad_time']);
    });

    it('still rejects what places the event or gives its result', () => {
      expect(lenient(dict({ event: 'start_task', seq_num: 'x' })).outcome).toMatchObject({
        reason: 'bad_seq_num',
      });
      expect(lenient(dict({ event: 'start_task', seq_num: 1, parent_seq_num: -2 })).outcome).toMatchObject({
        reason: 'bad_parent_seq_num',
      });
      expect(lenient(dict({ event: 'stop_task', seq_num: 1, result: 'great' })).outcome).toMatchObject({
        reason: 'bad_result',
      });
      expect(lenient(dict({ event: 7, seq_num: 1 })).outcome).toMatchObject({ reason: 'bad_field_type' });
      expect(lenient(dict({ event: 'start_task', seq_num: 1 })).dropped).toEqual([]);
    });
  });
});

/** Event pickles copied byte for byte from a real pyATS 23.2 reporter (test/fixtures/gen_real_messages.py). */
const REAL: Array<{ event: string; fullid: string; pickle: string }> = (
  JSON.parse(readFileSync(new URL('../fixtures/real-pyats-23.2.messages.json', import.meta.url), 'utf8')) as {
    messages: Array<{ event: string; fullid: string; pickle: string }>;
  }
).messages;

function realEvent(event: string, fullid: string) {
  const found = REAL.find((m) => m.event === event && m.fullid === fullid);
  if (found === undefined) throw new Error(`no real ${event} of ${fullid} in the fixture`);
  return ok(unpickle(Buffer.from(found.pickle, 'base64')), {
    zone: resolveZone('UTC'),
    maxStringLength: 4096,
  });
}

describe('normalize, events of a real pyATS 23.2 job', () => {
  const RUN_ID = 'job.2026Dec02_16:18:03.912790';

  it('reads a TestResult object (code, value, reason, data) into its value and reason', () => {
    const failed = realEvent('stop_section', 'ExampleTask.TcPass.test_steps.STEP 2');
    expect(failed.result).toEqual({ value: 'failed', reason: 'step two failed on purpose' });
    // An errored section also carries `data` (the traceback): only value and reason are kept.
    const errored = realEvent('stop_section', 'ExampleTask.TcError.t');
    expect(errored.result).toEqual({
      value: 'errored',
      reason: 'Caught an exception while executing section t',
    });
    expect(errored).toMatchObject({
      xref: { file: '/work/shared/real-pyats/example/script.py', line: 36 },
      logfile: '/tmp/rp2/.pyats/runinfo/job.2026Dec02_16:18:03.912790/TaskLog.ExampleTask',
    });
  });

  it('keeps no result for stop_task and stop_testsuite, which carry none', () => {
    for (const [event, fullid] of [
      ['stop_task', 'ExampleTask'],
      ['stop_testsuite', RUN_ID],
    ] as const) {
      const stop = realEvent(event, fullid);
      expect(stop.phase).toBe('stop');
      expect(stop).not.toHaveProperty('result');
      expect(stop.runtime).toBeGreaterThan(0);
    }
    // The bridge's JSON and other pickles may send the key with None: the same, not bad_result.
    const withNone = ok(
      dict({ event: 'stop_task', type: 'Task', seq_num: 2, parent_seq_num: 1, result: null }),
    );
    expect(withNone).not.toHaveProperty('result');
    const lenient = normalize(dict({ event: 'stop_testsuite', seq_num: 1, result: null }), utc, () => {
      throw new Error('nothing to drop');
    });
    expect(lenient.ok && lenient.event.result).toBeUndefined();
  });

  it('carries fullid, and the TestSuite id and name as init and start send them', () => {
    expect(realEvent('init_testsuite', RUN_ID)).toEqual({
      phase: 'init',
      event: 'init_testsuite',
      type: 'TestSuite',
      seqNum: 1,
      id: RUN_ID,
      fullid: RUN_ID,
      name: RUN_ID,
    });
    expect(realEvent('start_testsuite', RUN_ID)).toMatchObject({ id: RUN_ID, fullid: RUN_ID, name: 'job' });
    expect(realEvent('stop_section', 'ExampleTask.TcPass.test_steps.STEP 2').fullid).toBe(
      'ExampleTask.TcPass.test_steps.STEP 2',
    );
    // Cut like every other string.
    expect(ok(dict({ event: 'start_step', seq_num: 1, fullid: 'x'.repeat(1000) })).fullid).toHaveLength(64);
  });

  it("drops a Step's xref into Python's multiprocessing: it is no location in the script", () => {
    const step = realEvent('start_section', 'ExampleTask.TcPass.test_steps.STEP 1');
    expect(step).toMatchObject({ type: 'Step', id: 'STEP 1', name: 'step one', seqNum: 8, parentSeqNum: 7 });
    expect(step).not.toHaveProperty('xref');
  });

  it('keeps xrefs into the script, a virtualenv or site-packages, drops the standard library and pyATS', () => {
    const xrefOf = (file: string) =>
      ok(dict({ event: 'start_step', seq_num: 1, xref: dict({ file, line: 7 }) })).xref;
    for (const file of [
      '/work/shared/real-pyats/example/script.py',
      '/home/lab/venv/lib/python3.10/site-packages/lab_tests/bgp.py',
      '/usr/lib/python3/dist-packages/lab_tests/bgp.py',
      '/opt/tests/lib/python/helpers.py',
    ]) {
      expect(xrefOf(file), file).toEqual({ file, line: 7 });
    }
    for (const file of [
      '/root/.pyenv/versions/3.10.13/lib/python3.10/multiprocessing/process.py',
      '/usr/lib/python3.11/threading.py',
      '/usr/lib64/python3.9/unittest/case.py',
      '/home/lab/venv/lib/python3.10/site-packages/pyats/aetest/steps/implementation.py',
      '/usr/lib/python3/dist-packages/genie/libs/sdk/triggers/blitz/blitz.py',
    ]) {
      expect(xrefOf(file), file).toBeUndefined();
    }
    expect(
      ok(dict({ event: 'start_step', seq_num: 1, xref: '/usr/lib/python3.11/threading.py:1016' })).xref,
    ).toBeUndefined();
    expect(ok(dict({ event: 'start_step', seq_num: 1, xref: '/lab/bgp.py:12' })).xref).toEqual({
      file: '/lab/bgp.py',
      line: 12,
    });
  });

  it("takes a TestSuite's or Task's git-only xref (a job run from a git checkout) as no location, silently", () => {
    const git = dict({ branch: 'main', commit: '39145bb3', file: 'jobs/job.py' });
    const dropped: string[] = [];
    const outcome = normalize(
      dict({ event: 'start_task', seq_num: 2, id: 'T', xref: dict({ git }) }),
      utc,
      (reason) => dropped.push(reason),
    );
    expect(outcome.ok && outcome.event.xref).toBe(undefined);
    expect(dropped).toEqual([]);
    // An xref that is neither still counts as a dropped field.
    normalize(dict({ event: 'start_task', seq_num: 2, xref: dict({ other: 1 }) }), utc, (reason) =>
      dropped.push(reason),
    );
    expect(dropped).toEqual(['bad_field_type']);
  });
});
