import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { normalize } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import {
  KeyedStreams,
  LineSplitter,
  MAX_ENV_VALUE_LENGTH,
  MAX_ENV_VARIABLES,
  helloEnv,
  isValidStreamKey,
  itemOf,
  parseLine,
  toItem,
  type IngestTarget,
  type SplitLine,
} from '../../src/ingest/ndjson.js';
import { silentLogger } from '../../src/log.js';

function texts(lines: SplitLine[]): (string | number)[] {
  return lines.map((l) => ('text' in l ? l.text : -l.tooLongBytes));
}

describe('LineSplitter', () => {
  it('cuts LF and CRLF lines and numbers them', () => {
    const splitter = new LineSplitter(100);
    const lines = splitter.push(Buffer.from('a\r\nbb\n\nccc'));
    expect(lines).toEqual([
      { line: 1, text: 'a' },
      { line: 2, text: 'bb' },
      { line: 3, text: '' },
    ]);
    expect(splitter.end()).toEqual([{ line: 4, text: 'ccc' }]);
    expect(splitter.end()).toEqual([]);
  });

  it('gives the same lines whatever the chunking, multi-byte characters included', () => {
    const text = '{"name":"é→🚀"}\n{"a":1}\r\n\nxyz\n';
    const whole = new LineSplitter(1000);
    const expected = [...whole.push(Buffer.from(text)), ...whole.end()];
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 40 }), { maxLength: 10 }), (cuts) => {
        const bytes = Buffer.from(text);
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const splitter = new LineSplitter(1000);
        const got: SplitLine[] = [];
        let from = 0;
        for (const point of [...points, bytes.length]) {
          got.push(...splitter.push(bytes.subarray(from, point)));
          from = point;
        }
        got.push(...splitter.end());
        expect(got).toEqual(expected);
      }),
    );
  });

  it('reports a line over the limit by size, without holding it, and goes on', () => {
    const splitter = new LineSplitter(10);
    const got = [
      ...splitter.push(Buffer.from('short\n0123456789AB')),
      ...splitter.push(Buffer.from('CDEFGHIJ')),
      ...splitter.push(Buffer.from('KL\nok\n0123456789\n')),
      ...splitter.push(Buffer.from('x'.repeat(11))),
      ...splitter.end(),
    ];
    expect(texts(got)).toEqual(['short', -22, 'ok', '0123456789', -11]);
    expect(got.map((l) => l.line)).toEqual([1, 2, 3, 4, 5]);
  });

  it('does not count the CR of a CRLF against the limit', () => {
    const splitter = new LineSplitter(3);
    expect(texts(splitter.push(Buffer.from('abc\r\nabcd\r\n')))).toEqual(['abc', -5]);
  });
});

describe('parseLine', () => {
  it('skips blank lines', () => {
    expect(parseLine('')).toBeUndefined();
    expect(parseLine('  \t ')).toBeUndefined();
  });

  it('reads an event dict as the normalizer wants it: ISO times with offset, {value, reason} results', () => {
    const item = parseLine(
      JSON.stringify({
        event: 'stop_section',
        type: 'TestSection',
        seq_num: 7,
        parent_seq_num: 5,
        starttime: '2024-05-01T12:00:00.123456+02:00',
        stoptime: '2024-05-01T12:00:01.5+02:00',
        runtime: 1.376544,
        result: { value: 'failed', reason: 'BGP down' },
        xref: { file: '/x.py', line: 12 },
      }),
    );
    expect(item?.kind).toBe('event');
    if (item?.kind !== 'event') return;
    expect(Object.getPrototypeOf(item.value)).toBeNull();
    const outcome = normalize(item.value, { zone: resolveZone('UTC'), maxStringLength: 100 });
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.event).toMatchObject({
      phase: 'stop',
      seqNum: 7,
      parentSeqNum: 5,
      startTime: Date.UTC(2024, 4, 1, 10, 0, 0) + 123.456,
      stopTime: Date.UTC(2024, 4, 1, 10, 0, 1) + 500,
      result: { value: 'failed', reason: 'BGP down' },
      xref: { file: '/x.py', line: 12 },
    });
  });

  it('makes dicts without a prototype, so keys like __proto__ and constructor are plain data', () => {
    const item = parseLine(
      '{"event":"start_step","seq_num":1,"__proto__":{"x":1},"nested":{"constructor":2}}',
    );
    if (item?.kind !== 'event') throw new Error('not an event');
    const value = item.value as Record<string, unknown>;
    expect(Object.getPrototypeOf(value)).toBeNull();
    expect(Object.keys(value)).toContain('__proto__');
    expect(Object.getPrototypeOf(value['nested'])).toBeNull();
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });

  it('rejects bad JSON with the parser message', () => {
    expect(parseLine('{"event": ')).toMatchObject({ kind: 'invalid', reason: 'bad_json' });
  });

  it('passes non-objects on as events, for the normalizer to refuse', () => {
    expect(parseLine('42')).toEqual({ kind: 'event', value: 42 });
    expect(parseLine('[1]')).toEqual({ kind: 'event', value: [1] });
  });

  it('reads control lines', () => {
    expect(parseLine('{"control":"hello","stream":"lab1:job-42"}')).toEqual({
      kind: 'control',
      control: { kind: 'hello', stream: 'lab1:job-42' },
    });
    expect(parseLine('{"control":"end"}')).toEqual({ kind: 'control', control: { kind: 'end' } });
    expect(parseLine('{"control":"ping"}')).toEqual({ kind: 'control', control: { kind: 'ping' } });
    expect(parseLine('{"control":"reboot"}')).toMatchObject({ kind: 'invalid', reason: 'bad_control' });
    expect(parseLine('{"control":"hello"}')).toMatchObject({ kind: 'invalid', reason: 'bad_control' });
    expect(parseLine('{"control":"hello","stream":"a\\nb"}')).toMatchObject({ reason: 'bad_control' });
    // An event dict that happens to carry a `control` key is still an event.
    expect(toItem({ event: 'start_step', control: 'end' })).toMatchObject({ kind: 'event' });
  });

  it("keeps of a hello's env only the CI run it names, and refuses an env that is not a small map of strings", () => {
    const parent = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true };
    const env = {
      TRACEPARENT: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      GITLAB_CI: 'true',
      CI_PIPELINE_ID: '77',
      CI_JOB_URL: 'https://gitlab.example.com/lab/-/jobs/9',
      AWS_SECRET_ACCESS_KEY: 'never-kept',
    };
    expect(parseLine(JSON.stringify({ control: 'hello', stream: 'j', env }))).toEqual({
      kind: 'control',
      control: {
        kind: 'hello',
        stream: 'j',
        ci: {
          parent,
          system: 'gitlab_ci',
          runId: '77',
          taskRunUrl: 'https://gitlab.example.com/lab/-/jobs/9',
        },
      },
    });
    // Outside CI the env names nothing: the hello is a plain one.
    expect(helloEnv({ HOME: '/root' })).toEqual({});
    for (const [bad, why] of [
      ['TRACEPARENT=00-…', 'not an object of strings'],
      [{ TRACEPARENT: 7 }, 'TRACEPARENT is not a string'],
      [{ 'BAD NAME': 'x' }, '"BAD NAME" is not a variable name'],
      [{ TRACEPARENT: 'x'.repeat(MAX_ENV_VALUE_LENGTH + 1) }, 'over the limit of 4096'],
      [
        Object.fromEntries(Array.from({ length: MAX_ENV_VARIABLES + 1 }, (_, i) => [`V${i}`, ''])),
        '65 variables',
      ],
    ] as const) {
      const item = parseLine(JSON.stringify({ control: 'hello', stream: 'j', env: bad }));
      // The stream key still holds; the env is ignored as a whole, with the reason to count.
      expect(item).toMatchObject({ kind: 'control', control: { kind: 'hello', stream: 'j' } });
      const control = (item as { control: { ci?: unknown; envProblem?: string } }).control;
      expect(control.ci).toBeUndefined();
      expect(control.envProblem).toContain(why);
    }
  });

  it('turns a too-long split line into a rejection', () => {
    expect(itemOf({ line: 3, tooLongBytes: 99 }, 10)).toMatchObject({
      kind: 'invalid',
      reason: 'line_too_long',
    });
  });

  it('validates stream keys', () => {
    expect(isValidStreamKey('host:job')).toBe(true);
    expect(isValidStreamKey('')).toBe(false);
    expect(isValidStreamKey('x'.repeat(257))).toBe(false);
    expect(isValidStreamKey('a\u0000')).toBe(false);
    expect(isValidStreamKey(7)).toBe(false);
  });
});

describe('KeyedStreams', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function recorder(): IngestTarget & { ended: string[] } {
    const ended: string[] = [];
    return {
      ended,
      ingest: () => undefined,
      reject: () => {},
      endStream: (id) => ended.push(id),
      setStreamContext: () => {},
    };
  }

  it('ends a stream after it has been idle, and not while it has traffic', () => {
    vi.useFakeTimers();
    const target = recorder();
    const streams = new KeyedStreams({ prefix: 'p:', idleTimeoutMs: 1000, target, logger: silentLogger() });
    expect(streams.touch('job')).toBe('p:job');
    vi.advanceTimersByTime(900);
    streams.touch('job');
    vi.advanceTimersByTime(900);
    expect(target.ended).toEqual([]);
    vi.advanceTimersByTime(200);
    expect(target.ended).toEqual(['p:job']);
    expect(streams.size).toBe(0);
  });

  it('ends on request, and close() forgets the timers without ending anything', () => {
    vi.useFakeTimers();
    const target = recorder();
    const streams = new KeyedStreams({ prefix: 'p:', idleTimeoutMs: 1000, target, logger: silentLogger() });
    streams.touch('a');
    streams.touch('b');
    streams.end('a');
    expect(target.ended).toEqual(['p:a']);
    streams.close();
    vi.advanceTimersByTime(5000);
    expect(target.ended).toEqual(['p:a']);
  });

  it('never idles a stream out with a timeout of 0', () => {
    vi.useFakeTimers();
    const target = recorder();
    const streams = new KeyedStreams({ prefix: 'p:', idleTimeoutMs: 0, target, logger: silentLogger() });
    streams.touch('a');
    vi.advanceTimersByTime(10 ** 9);
    expect(target.ended).toEqual([]);
    expect(streams.size).toBe(1);
  });
});
