// The safe unpickler against real CPython pickles (written at test time by test/fixtures/gen_pickles.py into a
// temp dir), hand-built opcode streams, and malformed input.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  type PyDict,
  type PyValue,
} from '../../src/python/pyvalues.js';
import { unpickle, UnpickleError, type UnpickleErrorCode } from '../../src/python/unpickle.js';

const GENERATOR = fileURLToPath(new URL('../fixtures/gen_pickles.py', import.meta.url));

let dir: string;
let expected: Record<string, unknown>;
const fixtures = new Map<string, Uint8Array>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'unpickle-'));
  await promisify(execFile)('python3', [GENERATOR, dir]);
  expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8')) as Record<string, unknown>;
  for (const file of await readdir(dir)) {
    if (file.endsWith('.pickle'))
      fixtures.set(file.slice(0, -'.pickle'.length), await readFile(join(dir, file)));
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function fixture(name: string, protocol: number): Uint8Array {
  const data = fixtures.get(`${name}.p${protocol}`);
  if (data === undefined) throw new Error(`no fixture ${name}.p${protocol}`);
  return data;
}

function decodeDict(name: string, protocol: number): PyDict {
  const value = unpickle(fixture(name, protocol));
  expect(Object.getPrototypeOf(value)).toBeNull();
  return value as PyDict;
}

/** The tagged plain form gen_pickles.py writes to expected.json. */
function toPlain(value: PyValue): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return { $float: 'nan' };
    if (!Number.isFinite(value)) return { $float: value > 0 ? 'inf' : '-inf' };
    return value;
  }
  if (typeof value === 'bigint') return { $int: value.toString() };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return value.map(toPlain);
  if (value instanceof PyDateTime) {
    const { year, month, day, hour, minute, second, microsecond, tz } = value;
    return {
      $datetime: [year, month, day, hour, minute, second, microsecond],
      tz: tz === undefined ? null : toPlain(tz),
    };
  }
  if (value instanceof PyTimezone) return { $tz: [value.offsetSeconds ?? null, value.name ?? null] };
  if (value instanceof PyTimedelta) return { $timedelta: [value.days, value.seconds, value.microseconds] };
  if (value instanceof PyGlobal) return { $global: `${value.module}.${value.name}` };
  if (value instanceof PyObject) {
    const out: Record<string, unknown> = {
      $object: `${value.module}.${value.name}`,
      args: value.args.map(toPlain),
      state: value.state === undefined ? null : toPlain(value.state),
    };
    if (value.listItems.length > 0) out.list = value.listItems.map(toPlain);
    if (Object.keys(value.dictItems).length > 0) out.dict = plainEntries(value.dictItems);
    return out;
  }
  return { $dict: plainEntries(value) };
}

function plainEntries(dict: PyDict): Record<string, unknown> {
  return Object.fromEntries(Object.entries(dict).map(([k, v]) => [k, toPlain(v)]));
}

function bytes(...parts: (string | number[] | Uint8Array)[]): Uint8Array {
  const chunks = parts.map((p) =>
    typeof p === 'string' ? Buffer.from(p, 'latin1') : p instanceof Uint8Array ? p : Uint8Array.from(p),
  );
  return new Uint8Array(Buffer.concat(chunks));
}

function u64le(n: bigint): number[] {
  return Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
}

function errorOf(fn: () => unknown): UnpickleError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UnpickleError);
    return err as UnpickleError;
  }
  throw new Error('expected an UnpickleError, nothing was thrown');
}

function codeOf(data: Uint8Array, options?: Parameters<typeof unpickle>[1]): UnpickleErrorCode {
  return errorOf(() => unpickle(data, options)).code;
}

describe.each([0, 1, 2, 3, 4, 5])('CPython protocol %i fixtures', (protocol) => {
  it('decodes every case to exactly the expected value', () => {
    let checked = 0;
    for (const [name, want] of Object.entries(expected)) {
      const data = fixtures.get(`${name}.p${protocol}`);
      if (data === undefined) continue;
      expect(toPlain(unpickle(data)), `${name} at protocol ${protocol}`).toEqual(want);
      checked++;
    }
    expect(checked).toBeGreaterThan(20);
  });
});

describe.each([2, 3, 4, 5])('a pyATS event at protocol %i', (protocol) => {
  it('has every field, with naive datetimes to the microsecond', () => {
    const event = decodeDict('event_naive', protocol);
    expect(event.event).toBe('stop_section');
    expect(event.type).toBe('TestSection');
    expect(event.seq_num).toBe(7);
    expect(event.parent_seq_num).toBe(5);
    expect(event.runtime).toBe(2.345678);
    expect(event.starttime).toEqual(new PyDateTime(2024, 3, 5, 14, 7, 9, 123456, undefined));
    expect(event.stoptime).toEqual(new PyDateTime(2024, 3, 5, 14, 7, 11, 469134, undefined));
    expect((event.stoptime as PyDateTime).wallClockAsUtcMs()).toBe(Date.UTC(2024, 2, 5, 14, 7, 11) + 469.134);
    expect((event.xref as PyDict).line).toBe(42);
    expect((event.logs as PyDict).size).toBe(2048);
  });

  it('reads the result object by its state', () => {
    const result = decodeDict('event_failed', protocol).result;
    expect(result).toBeInstanceOf(PyObject);
    const object = result as PyObject;
    expect([object.module, object.name, object.args]).toEqual(['__main__', 'Passed', []]);
    const state = object.state as PyDict;
    expect(Object.getPrototypeOf(state)).toBeNull();
    expect([state.value, state.code, state.reason]).toEqual(['failed', 1, 'device did not answer']);
    expect((state.data as PyDict).hosts).toEqual(['r1', 'r2']);
  });

  it('keeps tz-aware datetimes with their offset or zone', () => {
    const utc = decodeDict('event_utc', protocol);
    expect(utc.starttime).toEqual(new PyDateTime(2024, 3, 5, 14, 7, 9, 5, new PyTimezone(0, undefined)));
    expect((utc.stoptime as PyDateTime).microsecond).toBe(999999);
    const ist = decodeDict('event_offset', protocol).starttime as PyDateTime;
    expect(ist.tz).toEqual(new PyTimezone(19800, undefined));
    expect(ist.microsecond).toBe(0);
    const est = decodeDict('event_named_offset', protocol).starttime as PyDateTime;
    expect(est.tz).toEqual(new PyTimezone(-18000, undefined));
    const pytz = decodeDict('event_pytz', protocol);
    expect((pytz.starttime as PyDateTime).tz).toEqual(new PyTimezone(3600, undefined));
    expect((pytz.stoptime as PyDateTime).tz).toEqual(new PyTimezone(0, undefined));
    expect((pytz.extra_times as PyDateTime[]).map((t) => t.tz)).toEqual([
      new PyTimezone(-5400, undefined),
      new PyTimezone(undefined, 'Asia/Tokyo'),
    ]);
  });

  it('names the zone of a zoneinfo datetime, fold bit masked out of the month', (ctx) => {
    if (!fixtures.has(`event_paris.p${protocol}`)) ctx.skip();
    const paris = decodeDict('event_paris', protocol).starttime;
    expect(paris).toEqual(
      new PyDateTime(2024, 7, 1, 9, 0, 0, 250000, new PyTimezone(undefined, 'Europe/Paris')),
    );
    const folded = decodeDict('event_paris_fold', protocol).stoptime;
    expect(folded).toEqual(
      new PyDateTime(2024, 10, 27, 2, 30, 1, 0, new PyTimezone(undefined, 'Europe/Paris')),
    );
  });
});

describe('protocol-specific encodings', () => {
  it('turns protocol 2 `_codecs.encode(str, "latin1")` datetime state into bytes', () => {
    const data = fixture('event_utc', 2);
    expect(Buffer.from(data).includes('_codecs\nencode')).toBe(true);
    const starttime = (unpickle(data) as PyDict).starttime as PyDateTime;
    expect(starttime).toBeInstanceOf(PyDateTime);
    expect(starttime.microsecond).toBe(5);
    const bytesValues = unpickle(fixture('bytes_values', 2)) as PyDict;
    expect(bytesValues.all).toEqual(Uint8Array.from({ length: 256 }, (_, i) => i));
    expect(bytesValues.ba).toEqual(Uint8Array.from([0, 1, 255]));
  });

  it('reads protocol 5 BYTEARRAY8 and protocol 4 FRAMEs', () => {
    const data = fixture('bytes_values', 5);
    expect(data.includes(0x96)).toBe(true);
    expect((unpickle(data) as PyDict).ba_long).toEqual(new Uint8Array(300).fill(0x79));
    expect(fixture('event_utc', 4)[2]).toBe(0x95);
  });

  it('returns numbers within ±(2^53−1) and bigint beyond', () => {
    for (const protocol of [0, 2, 5]) {
      const ints = unpickle(fixture('bigints', protocol)) as PyValue[];
      expect(ints).toContain(9007199254740991);
      expect(ints).toContain(-9007199254740991);
      expect(ints).toContain(2147483648);
      expect(ints).toContain(-2147483649);
      expect(ints).toContain(9007199254740992n);
      expect(ints).toContain(-9007199254740992n);
      expect(ints).toContain(-(2n ** 63n));
      expect(ints).toContain(2n ** 1000n + 7n);
    }
  });

  it('keeps shared references shared (memo)', () => {
    for (const protocol of [0, 2, 4]) {
      const shared = unpickle(fixture('shared', protocol)) as PyDict;
      expect(shared.a).toBe(shared.b);
      expect((shared.c as PyValue[])[0]).toBe(shared.a);
    }
  });

  it('decodes lone surrogates to U+FFFD instead of failing', () => {
    for (const protocol of [0, 1, 2, 5]) {
      const value = unpickle(fixture('surrogates', protocol)) as PyDict;
      expect(value.lone).toBe('a\uFFFD\uFFFD\uFFFDb');
      expect(value['key\uFFFD\uFFFD\uFFFD']).toBe('v');
    }
  });

  it('stringifies non-string dict keys', () => {
    const keys = unpickle(fixture('odd_keys', 4)) as PyDict;
    expect(Object.keys(keys).sort()).toEqual(
      [
        '-2',
        '1',
        '1180591620717411303424',
        '2.5',
        'False',
        'None',
        '["z"]',
        '[1,"a"]',
        '[[1,2],"b"]',
        'ké',
      ].sort(),
    );
  });

  it('records globals and keyword arguments without resolving anything', () => {
    const objects = unpickle(fixture('objects', 2)) as PyDict;
    expect(objects.func).toEqual(new PyGlobal('builtins', 'len'));
    expect(objects.td).toEqual(new PyTimedelta(1, 2, 3));
    const kw = unpickle(fixture('newobj_ex', 4)) as PyObject;
    expect(kw.args[0]).toBe(3);
    expect({ ...(kw.args[1] as PyDict) }).toEqual({ unit: 'ms' });
  });
});

describe('prototype safety', () => {
  it('keeps __proto__, constructor and prototype as plain own keys', () => {
    for (const protocol of [0, 2, 5]) {
      const value = unpickle(fixture('proto_keys', protocol)) as PyDict;
      expect(Object.getPrototypeOf(value)).toBeNull();
      expect(Object.keys(value)).toEqual(
        expect.arrayContaining(['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty']),
      );
      expect(Object.getPrototypeOf(value.__proto__ as object)).toBeNull();
      expect({ ...(value.__proto__ as PyDict) }).toEqual({ polluted: true });
      expect(value.constructor).toBe('x');
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    expect(Object.getOwnPropertyNames(Object.prototype)).not.toContain('polluted');
  });

  it('keeps __proto__ in OrderedDicts and object state as plain data', () => {
    const ordered = (unpickle(fixture('objects', 3)) as PyDict).ordered as PyDict;
    expect(Object.getPrototypeOf(ordered)).toBeNull();
    expect(Object.keys(ordered)).toEqual(['b', 'a', '__proto__']);
    // BUILD of {'__proto__': {'polluted': 1}} on an object, then a (dict, slots) state with the same key.
    const state = bytes(
      '\x80\x02cm\nC\n)\x81}X\x09\x00\x00\x00__proto__}X\x08\x00\x00\x00polluted',
      'K\x01ssbN}X\x09\x00\x00\x00__proto__K\x02s\x86b.',
    );
    const object = unpickle(state) as PyObject;
    expect(Object.getPrototypeOf(object.state)).toBeNull();
    expect((object.state as PyDict).__proto__).toBe(2);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('hand-built opcode streams', () => {
  it('reads protocol 0 text opcodes', () => {
    const text = bytes(
      "(S'a\\'b\\\\c\\x41\\n'\nI01\nI-7\nL123456789012345678901L\nF-1.5e3\nFnan\nVx\\u00e9\\U0001f600\nt.",
    );
    expect(unpickle(text)).toEqual(["a'b\\cA\n", true, -7, 123456789012345678901n, -1500, NaN, 'xé😀']);
  });

  it('reads an old-style INST / OBJ instance', () => {
    const inst = unpickle(bytes('(I1\nimod\nKls\n.')) as PyObject;
    expect([inst.module, inst.name, inst.args]).toEqual(['mod', 'Kls', [1]]);
    const obj = unpickle(bytes('(cmod\nKls\nK\x02o.')) as PyObject;
    expect([obj.module, obj.name, obj.args]).toEqual(['mod', 'Kls', [2]]);
  });

  it('builds the class, not copyreg, for explicit copyreg wrappers', () => {
    const newobj = unpickle(bytes('\x80\x02ccopy_reg\n__newobj__\ncm\nC\nK\x01\x86R.')) as PyObject;
    expect([newobj.module, newobj.name, newobj.args]).toEqual(['m', 'C', [1]]);
    const newobjEx = unpickle(
      bytes('ccopyreg\n__newobj_ex__\n(cm\nC\n(K\x01t}X\x01\x00\x00\x00kK\x02stR.'),
    ) as PyObject;
    expect([newobjEx.module, newobjEx.name, newobjEx.args[0]]).toEqual(['m', 'C', 1]);
    expect({ ...(newobjEx.args[1] as PyDict) }).toEqual({ k: 2 });
  });

  it('ignores data after STOP', () => {
    expect(unpickle(bytes('\x80\x04N.garbage'))).toBeNull();
  });

  it('accepts a datetime built from plain fields', () => {
    const plain = bytes('\x80\x02cdatetime\ndatetime\n(M\xe8\x07K\x02K\x1dK\x17K;K;J\x3f\x42\x0f\x00tR.');
    expect(unpickle(plain)).toEqual(new PyDateTime(2024, 2, 29, 23, 59, 59, 999999, undefined));
  });

  it('rejects a datetime state that is out of range', () => {
    const badMonth = bytes(
      '\x80\x03cdatetime\ndatetime\nC\x0a\x07\xe8\x0d\x01\x00\x00\x00\x00\x00\x00\x85R.',
    );
    expect(codeOf(badMonth)).toBe('bad_value');
  });
});

describe('bounds', () => {
  it('accepts nesting up to maxDepth and rejects one more', () => {
    expect(() => unpickle(fixture('deep_ok', 4))).not.toThrow();
    expect(codeOf(fixture('deep_ok', 4), { maxDepth: 199 })).toBe('too_deep');
    expect(codeOf(fixture('event_utc', 4), { maxDepth: 2 })).toBe('too_deep');
    expect(() => unpickle(fixture('event_utc', 4), { maxDepth: 4 })).not.toThrow();
  });

  it('rejects 100k nested lists without overflowing the call stack', () => {
    const n = 100_000;
    const appends = bytes('\x80\x02', ']'.repeat(n), 'a'.repeat(n - 1), '.');
    expect(codeOf(appends)).toBe('too_deep');
    const marks = bytes('('.repeat(n), 'l'.repeat(n), '.');
    expect(codeOf(marks)).toBe('too_deep');
    const tuples = bytes(')', '\x85'.repeat(n), '.');
    expect(codeOf(tuples)).toBe('too_deep');
  });

  it('rejects a chain of lists grown through the memo after being attached', () => {
    // L0 = []; then repeatedly: push a new list, memoize it, append it to the previous one (fetched from memo).
    const parts: string[] = ['\x80\x02]r\x00\x00\x00\x00'];
    for (let i = 1; i < 5000; i++) {
      const index = (k: number): string => String.fromCharCode(k & 0xff, (k >> 8) & 0xff, 0, 0);
      parts.push(`j${index(i - 1)}]r${index(i)}a0`);
    }
    parts.push('j\x00\x00\x00\x00.');
    expect(codeOf(bytes(...parts))).toBe('too_deep');
  });

  it('rejects a list that contains itself', () => {
    expect(codeOf(bytes('\x80\x02]q\x00h\x00a.'))).toBe('too_deep');
  });

  it('does not blow up on a DAG with exponentially many paths', () => {
    // L(k+1) = [Lk, Lk], 60 levels: 2^60 paths but 61 distinct lists.
    let stream = '\x80\x02]';
    for (let i = 0; i < 60; i++) stream += '2\x86';
    expect(Array.isArray(unpickle(bytes(stream, '.')))).toBe(true);
  });

  it('enforces maxItems', () => {
    expect(codeOf(fixture('batches', 4), { maxItems: 1000 })).toBe('too_large');
    expect(() => unpickle(fixture('batches', 4), { maxItems: 5000 })).not.toThrow();
  });

  it('checks huge declared lengths against the input before allocating', () => {
    const huge = [
      bytes('\x80\x04\x8d', u64le(1n << 62n), 'abc'),
      bytes('\x80\x04\x8e', u64le(0xffffffffffffffffn), 'abc'),
      bytes('\x80\x05\x96', u64le(1n << 40n), 'abc'),
      bytes('\x80\x04\x95', u64le(1n << 50n), 'N.'),
      bytes('\x80\x02X\xff\xff\xff\xffabc'),
      bytes('\x80\x03B\xff\xff\xff\x7fabc'),
      bytes('\x80\x02\x8b\xff\xff\xff\x7fabc'),
      bytes('T\xff\xff\xff\x7fabc'),
    ];
    for (const data of huge) expect(codeOf(data)).toBe('truncated');
    expect(codeOf(bytes('T\xff\xff\xff\xffabc'))).toBe('bad_value');
    expect(codeOf(bytes('\x80\x02\x8b\xfe\xff\xff\xffabc'))).toBe('bad_value');
  });
});

describe('malformed input', () => {
  it.each([
    ['empty input', 'no_stop', ''],
    ['no STOP', 'no_stop', '\x80\x02N'],
    ['unknown opcode', 'bad_opcode', '\x80\x02\xff'],
    ['protocol 6', 'unsupported_protocol', '\x80\x06N.'],
    ['persistent id', 'unsupported_opcode', '\x80\x02Pid\n.'],
    ['extension code', 'unsupported_opcode', '\x80\x02\x82\x01.'],
    ['out-of-band buffer', 'unsupported_opcode', '\x80\x05\x97.'],
    ['STOP on an empty stack', 'stack_underflow', '.'],
    ['APPEND with nothing', 'stack_underflow', '\x80\x02]a.'],
    ['TUPLE without MARK', 'stack_underflow', '\x80\x02Nt.'],
    ['pop across a MARK', 'stack_underflow', '\x80\x02N(\x85.'],
    ['SETITEMS with no dict', 'stack_underflow', '\x80\x02(K\x01K\x02u.'],
    ['memo miss', 'bad_memo', '\x80\x02h\x05.'],
    ['PUT with empty stack', 'stack_underflow', '\x80\x02q\x00.'],
    ['odd SETITEMS', 'bad_value', '\x80\x02}(K\x01u.'],
    ['APPEND to an int', 'bad_value', '\x80\x02K\x01K\x02a.'],
    ['SETITEM on a list', 'bad_value', '\x80\x02]K\x01K\x02s.'],
    ['dict as a dict key', 'bad_value', '\x80\x02}}K\x01s.'],
    ['REDUCE of a non-global', 'bad_value', '\x80\x02K\x01)R.'],
    ['REDUCE with non-tuple args', 'bad_value', '\x80\x02cm\nf\nK\x01R.'],
    ['STACK_GLOBAL of ints', 'bad_value', '\x80\x04K\x01K\x02\x93.'],
    ['bad INT literal', 'bad_value', 'I12x\n.'],
    ['too many decimal digits', 'too_large', `L${'9'.repeat(5000)}L\n.`],
    ['unterminated line', 'truncated', 'I12'],
    ['unquoted STRING', 'bad_value', 'Sabc\n.'],
    ['bad \\u escape', 'bad_value', 'V\\u00zz\n.'],
    ['truncated BININT', 'truncated', '\x80\x02J\x01\x02'],
    ['truncated BINFLOAT', 'truncated', '\x80\x02G\x01\x02\x03'],
  ] as const)('%s → %s', (_name, code, stream) => {
    expect(codeOf(bytes(stream))).toBe(code);
  });

  it('throws only UnpickleError when a real pickle is cut at any byte', () => {
    for (const name of ['event_utc', 'event_pytz', 'objects', 'odd_keys']) {
      for (const protocol of [0, 1, 2, 3, 4, 5]) {
        const data = fixtures.get(`${name}.p${protocol}`);
        if (data === undefined) continue;
        for (let cut = 0; cut < data.length; cut++) {
          const err = errorOf(() => unpickle(data.subarray(0, cut)));
          expect(['truncated', 'no_stop', 'stack_underflow'], `${name}.p${protocol} cut at ${cut}`).toContain(
            err.code,
          );
        }
      }
    }
  });

  it('reports the byte offset of the failing opcode', () => {
    const err = errorOf(() => unpickle(bytes('\x80\x02N\xff')));
    expect(err.offset).toBe(3);
    expect(err.message).toContain('at byte 3');
  });
});
