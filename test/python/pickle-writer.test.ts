import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { pickle, PickleWriteError, type PickleProtocol } from '../../src/python/pickle-writer.js';
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  type PyDict,
  type PyValue,
} from '../../src/python/pyvalues.js';

interface Case {
  name: string;
  value: PyValue;
  /** A Python expression (evaluated in the checker below) for the object the pickle must load as. */
  py: string;
}

function nullProtoDict(entries: Record<string, PyValue>): PyDict {
  return Object.assign(Object.create(null) as PyDict, entries);
}

const bytes300 = Uint8Array.from({ length: 300 }, (_, i) => i % 256);
const manyKeys: PyDict = {};
for (let i = 0; i < 1500; i++) manyKeys[`k${i}`] = i;

const CASES: Case[] = [
  { name: 'None', value: null, py: 'None' },
  { name: 'True', value: true, py: 'True' },
  { name: 'False', value: false, py: 'False' },
  ...[0, 1, 255, 256, 65535, 65536, -1, -256, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1].map((n) => ({
    name: `int ${n}`,
    value: n,
    py: String(n),
  })),
  { name: 'int max safe', value: Number.MAX_SAFE_INTEGER, py: '2**53 - 1' },
  { name: 'int min safe', value: Number.MIN_SAFE_INTEGER, py: '-(2**53 - 1)' },
  { name: 'int 1e300 (integral double)', value: 1e300, py: 'int(1e300)' },
  { name: 'bigint 2**64', value: 2n ** 64n, py: '2**64' },
  { name: 'bigint -2**63', value: -(2n ** 63n), py: '-2**63' },
  { name: 'bigint -129', value: -129n, py: '-129' },
  { name: 'bigint LONG4', value: -(2n ** 2100n) + 7n, py: '-2**2100 + 7' },
  { name: 'float 0.5', value: 0.5, py: '0.5' },
  { name: 'float 0.1', value: 0.1, py: '0.1' },
  { name: 'float -1.25', value: -1.25, py: '-1.25' },
  { name: 'float subnormal', value: 1e-310, py: '1e-310' },
  { name: 'float with exponent', value: -2.5e-5, py: '-2.5e-05' },
  {
    name: 'int Number.MAX_VALUE (integral double)',
    value: Number.MAX_VALUE,
    py: 'int(1.7976931348623157e308)',
  },
  { name: 'float inf', value: Infinity, py: "float('inf')" },
  { name: 'float -inf', value: -Infinity, py: "float('-inf')" },
  { name: 'float nan', value: NaN, py: "float('nan')" },
  { name: 'str empty', value: '', py: "''" },
  { name: 'str ascii', value: 'abc', py: "'abc'" },
  { name: 'str newline', value: 'line\nbreak', py: "'line\\nbreak'" },
  { name: 'str non-ascii', value: 'é€😀', py: "'\\u00e9\\u20ac\\U0001F600'" },
  { name: 'str 255 bytes', value: 'x'.repeat(255), py: "'x' * 255" },
  { name: 'str 256 bytes', value: 'x'.repeat(256), py: "'x' * 256" },
  { name: 'bytes empty', value: new Uint8Array(0), py: "b''" },
  { name: 'bytes high', value: Uint8Array.from([0, 128, 255, 10]), py: "b'\\x00\\x80\\xff\\n'" },
  { name: 'bytes 300', value: bytes300, py: 'bytes(i % 256 for i in range(300))' },
  { name: 'list empty', value: [], py: '[]' },
  { name: 'list one', value: [1], py: '[1]' },
  { name: 'list nested', value: [1, 'a', [2, [3, null]]], py: "[1, 'a', [2, [3, None]]]" },
  { name: 'list batched', value: Array.from({ length: 2500 }, (_, i) => i), py: 'list(range(2500))' },
  { name: 'dict empty', value: {}, py: '{}' },
  { name: 'dict one', value: { a: 1 }, py: "{'a': 1}" },
  {
    name: 'dict nested',
    value: { a: [1, { b: null }], c: 'd', e: 2.5 },
    py: "{'a': [1, {'b': None}], 'c': 'd', 'e': 2.5}",
  },
  { name: 'dict null prototype', value: nullProtoDict({ x: true, y: 'z' }), py: "{'x': True, 'y': 'z'}" },
  { name: 'dict batched', value: manyKeys, py: "{f'k{i}': i for i in range(1500)}" },
  {
    name: 'datetime naive',
    value: new PyDateTime(2024, 5, 6, 7, 8, 9, 123456),
    py: 'datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)',
  },
  { name: 'datetime year 1', value: new PyDateTime(1, 1, 1, 0, 0, 0, 0), py: 'datetime.datetime(1, 1, 1)' },
  {
    name: 'datetime year 9999',
    value: new PyDateTime(9999, 12, 31, 23, 59, 59, 999999),
    py: 'datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)',
  },
  {
    name: 'datetime utc',
    value: new PyDateTime(2020, 4, 1, 12, 0, 0, 5, new PyTimezone(0, undefined)),
    py: 'datetime.datetime(2020, 4, 1, 12, 0, 0, 5, tzinfo=datetime.timezone.utc)',
  },
  {
    name: 'datetime +05:30',
    value: new PyDateTime(2020, 4, 1, 12, 0, 0, 0, new PyTimezone(19800, undefined)),
    py: 'datetime.datetime(2020, 4, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)))',
  },
  {
    name: 'datetime -08:00',
    value: new PyDateTime(2024, 1, 2, 3, 4, 5, 678901, new PyTimezone(-28800, undefined)),
    py: 'datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone(datetime.timedelta(hours=-8)))',
  },
  {
    name: 'datetime sub-minute offset',
    value: new PyDateTime(2024, 1, 2, 3, 4, 5, 0, new PyTimezone(-3723.5, undefined)),
    py: 'datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(-datetime.timedelta(seconds=3723.5)))',
  },
  {
    name: 'datetime zoneinfo',
    value: new PyDateTime(2024, 7, 1, 9, 30, 0, 0, new PyTimezone(undefined, 'Europe/Paris')),
    py: "datetime.datetime(2024, 7, 1, 9, 30, tzinfo=zoneinfo.ZoneInfo('Europe/Paris'))",
  },
  { name: 'timedelta', value: new PyTimedelta(1, 2, 3), py: 'datetime.timedelta(1, 2, 3)' },
  {
    name: 'timedelta negative',
    value: new PyTimedelta(-1, 86399, 999999),
    py: 'datetime.timedelta(microseconds=-1)',
  },
  { name: 'timezone utc', value: new PyTimezone(0, undefined), py: 'datetime.timezone.utc' },
  {
    name: 'timezone -01:00',
    value: new PyTimezone(-3600, undefined),
    py: 'datetime.timezone(datetime.timedelta(hours=-1))',
  },
  { name: 'global builtin', value: new PyGlobal('builtins', 'len'), py: 'len' },
  { name: 'global module', value: new PyGlobal('collections', 'OrderedDict'), py: 'collections.OrderedDict' },
  { name: 'global nested', value: new PyGlobal('__main__', 'Outer.Inner'), py: 'Outer.Inner' },
  {
    name: 'object with state',
    value: new PyObject('__main__', 'Passed', [], { value: 'passed', code: 1 }),
    py: "make(Passed, value='passed', code=1)",
  },
  { name: 'object without state', value: new PyObject('__main__', 'Passed'), py: 'Passed()' },
  {
    name: 'object with new args',
    value: new PyObject('__main__', 'Point', [1, 2], { x: 1, y: 2 }),
    py: 'Point(1, 2)',
  },
  {
    name: 'object list subclass',
    value: new PyObject('__main__', 'Bag', [], undefined, [1, 'two', 3]),
    py: "Bag([1, 'two', 3])",
  },
  {
    name: 'object dict subclass',
    value: new PyObject('__main__', 'Table', [], undefined, [], nullProtoDict({ a: 1, b: [2] })),
    py: "Table({'a': 1, 'b': [2]})",
  },
  {
    name: 'reporter-like event',
    value: {
      event: 'stop_section',
      type: 'TestSection',
      seq_num: 12,
      parent_seq_num: 3,
      id: 'test_one',
      starttime: new PyDateTime(2024, 3, 4, 10, 11, 12, 131415),
      stoptime: new PyDateTime(2024, 3, 4, 10, 11, 13, 0),
      runtime: 0.87,
      result: new PyObject('__main__', 'Passed', [], { value: 'passed', code: 1 }),
      logs: { file: 'TaskLog.task-1', begin: 100, size: 2048 },
      xref: { file: '/tmp/job.py', line: 42 },
    },
    py:
      "{'event': 'stop_section', 'type': 'TestSection', 'seq_num': 12, 'parent_seq_num': 3, 'id': 'test_one'," +
      " 'starttime': datetime.datetime(2024, 3, 4, 10, 11, 12, 131415)," +
      " 'stoptime': datetime.datetime(2024, 3, 4, 10, 11, 13), 'runtime': 0.87," +
      " 'result': make(Passed, value='passed', code=1)," +
      " 'logs': {'file': 'TaskLog.task-1', 'begin': 100, 'size': 2048}," +
      " 'xref': {'file': '/tmp/job.py', 'line': 42}}",
  },
];

// Loads each pickle with CPython and compares it with the expected object (repr and the types all the way
// down), and with what CPython's own pickler writes in fast mode (no memo), byte for byte.
const CHECKER = String.raw`
import base64, collections, datetime, io, json, pickle, sys, zoneinfo

class Passed:
    def __repr__(self):
        return 'Passed(%r)' % (sorted(self.__dict__.items()),)

class Outer:
    class Inner:
        pass

class Point:
    def __new__(cls, x, y):
        self = object.__new__(cls)
        self.x, self.y = x, y
        return self
    def __getnewargs__(self):
        return (self.x, self.y)
    def __repr__(self):
        return 'Point(%r)' % (sorted(self.__dict__.items()),)

class Bag(list):
    pass

class Table(dict):
    pass

def make(cls, **attrs):
    obj = cls()
    obj.__dict__.update(attrs)
    return obj

def shape(v):
    t = type(v).__module__ + '.' + type(v).__qualname__
    if isinstance(v, (list, tuple)):
        return [t, [shape(x) for x in v]]
    if isinstance(v, dict):
        return [t, [[shape(k), shape(x)] for k, x in v.items()]]
    if isinstance(v, datetime.datetime):
        return [t, repr(v.tzinfo), v.utcoffset() and v.utcoffset().total_seconds()]
    if hasattr(v, '__dict__') and not isinstance(v, type):
        return [t, shape(vars(v))]
    return t

def canonical(v, protocol):
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol)
    pickler.fast = True
    pickler.dump(v)
    return out.getvalue()

request = json.load(sys.stdin)
protocol = request['protocol']
results = []
for case in request['cases']:
    data = base64.b64decode(case['b64'])
    result = {'name': case['name']}
    try:
        loaded = pickle.loads(data)
        expected = eval(case['py'])
        result['repr'] = repr(loaded)
        result['expectedRepr'] = repr(expected)
        result['shapeEqual'] = shape(loaded) == shape(expected)
        result['canonical'] = base64.b64encode(canonical(expected, protocol)).decode()
    except Exception as e:
        result['error'] = '%s: %s' % (type(e).__name__, e)
    results.append(result)
json.dump(results, sys.stdout)
`;

interface CheckResult {
  name: string;
  repr?: string;
  expectedRepr?: string;
  shapeEqual?: boolean;
  canonical?: string;
  error?: string;
}

function runPython(script: string, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(stdout) : reject(new Error(`python3 exited ${code}: ${stderr}`)),
    );
    child.stdin.end(input);
  });
}

const b64 = (data: Uint8Array): string => Buffer.from(data).toString('base64');

describe('pickle (checked against CPython)', () => {
  for (const protocol of [2, 3, 4, 5] as PickleProtocol[]) {
    it(`protocol ${protocol}: CPython loads every value as expected and pickles it to the same bytes`, async () => {
      const cases = CASES.map((c) => ({ name: c.name, py: c.py, b64: b64(pickle(c.value, { protocol })) }));
      const results = JSON.parse(
        await runPython(CHECKER, JSON.stringify({ protocol, cases })),
      ) as CheckResult[];
      expect(results).toHaveLength(CASES.length);
      for (const [i, result] of results.entries()) {
        const sent = cases[i]?.b64;
        expect({ name: result.name, error: result.error }).toEqual({
          name: CASES[i]?.name,
          error: undefined,
        });
        expect({ name: result.name, repr: result.repr }).toEqual({
          name: result.name,
          repr: result.expectedRepr,
        });
        expect({ name: result.name, shapeEqual: result.shapeEqual }).toEqual({
          name: result.name,
          shapeEqual: true,
        });
        expect({ name: result.name, bytes: sent }).toEqual({ name: result.name, bytes: result.canonical });
      }
    });
  }

  it('defaults to protocol 4, framed like CPython', () => {
    const bytes = pickle({ action: 'subscribe' });
    expect(Array.from(bytes.subarray(0, 3))).toEqual([0x80, 4, 0x95]);
    expect(bytes[bytes.length - 1]).toBe(0x2e);
    expect(Array.from(pickle(null))).toEqual([0x80, 4, 0x4e, 0x2e]);
  });

  it('writes protocol 2 datetimes through _codecs.encode(..., "latin1") exactly as CPython does', () => {
    const bytes = pickle(new PyDateTime(2024, 1, 2, 3, 4, 5, 678901), { protocol: 2 });
    const expected = Buffer.concat([
      Buffer.from([0x80, 2]),
      Buffer.from('cdatetime\ndatetime\nc_codecs\nencode\n', 'latin1'),
      Buffer.from([0x58, 12, 0, 0, 0]),
      Buffer.from('\u0007\u00e8\u0001\u0002\u0003\u0004\u0005\n[\u00f5', 'utf8'),
      Buffer.from([0x58, 6, 0, 0, 0]),
      Buffer.from('latin1', 'latin1'),
      Buffer.from([0x86, 0x52, 0x85, 0x52, 0x2e]),
    ]);
    expect(Buffer.from(bytes).toString('hex')).toBe(expected.toString('hex'));
  });

  it('refuses what it cannot write, with a code', () => {
    const cyclic: PyValue[] = [];
    cyclic.push(cyclic);
    const refusals: Array<[() => unknown, string]> = [
      [() => pickle(cyclic), 'cycle'],
      [() => pickle(new Date() as unknown as PyValue), 'unsupported_value'],
      [() => pickle(undefined as unknown as PyValue), 'unsupported_value'],
      [() => pickle(new PyTimezone(undefined, undefined)), 'unsupported_value'],
      [() => pickle(null, { protocol: 1 as PickleProtocol }), 'bad_protocol'],
    ];
    for (const [write, code] of refusals) {
      expect(write).toThrow(PickleWriteError);
      expect(() => {
        try {
          write();
        } catch (err) {
          throw new Error((err as PickleWriteError).code);
        }
      }).toThrow(code);
    }
  });

  it('writes a value shared twice (not a cycle) twice', () => {
    const shared = [1];
    expect(() => pickle([shared, shared])).not.toThrow();
  });
});
