import { describe, expect, it } from 'vitest';
import { normalize, type NormalizeOptions } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  type PyDict,
} from '../../src/reporter/pyvalues.js';

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
      xref: { file: '/scripts/bgp.py', line: 42 },
    });
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
});
