// A minimal pickle writer (protocols 2..5) for PyValues: the subscribe request and the demo reporter's events.
// Emits what CPython's pickler emits in "fast" mode (no memo), so CPython loads it to the same objects.
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  isPyDict,
  type PyDict,
  type PyValue,
} from './pyvalues.js';

export type PickleProtocol = 2 | 3 | 4 | 5;

export interface PickleOptions {
  /** Pickle protocol; default 4 (CPython's default since 3.8). */
  protocol?: PickleProtocol;
  /**
   * Memoize strings, lists and dicts as CPython's default pickler does (MEMOIZE from protocol 4, BINPUT
   * below), so a request to the reporter is byte for byte what pyATS's own client sends. Values are never
   * looked up in the memo: a repeated value is written again, which CPython would write as a memo get.
   * Default false (fast mode, as the demo reporter's events).
   */
  memoize?: boolean;
}

export type PickleWriteErrorCode = 'unsupported_value' | 'cycle' | 'bad_protocol';

export class PickleWriteError extends Error {
  constructor(
    readonly code: PickleWriteErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PickleWriteError';
  }
}

// Opcodes, as named in CPython's Lib/pickle.py.
const MARK = 0x28; // (
const STOP = 0x2e; // .
const NONE = 0x4e; // N
const BININT = 0x4a; // J
const BININT1 = 0x4b; // K
const BININT2 = 0x4d; // M
const BINFLOAT = 0x47; // G
const BINUNICODE = 0x58; // X
const SHORT_BINUNICODE = 0x8c;
const BINUNICODE8 = 0x8d;
const BINBYTES = 0x42; // B
const SHORT_BINBYTES = 0x43; // C
const BINBYTES8 = 0x8e;
const EMPTY_LIST = 0x5d; // ]
const APPEND = 0x61; // a
const APPENDS = 0x65; // e
const EMPTY_DICT = 0x7d; // }
const SETITEM = 0x73; // s
const SETITEMS = 0x75; // u
const EMPTY_TUPLE = 0x29; // )
const TUPLE = 0x74; // t
const TUPLE1 = 0x85;
const TUPLE2 = 0x86;
const TUPLE3 = 0x87;
const GLOBAL = 0x63; // c
const STACK_GLOBAL = 0x93;
const REDUCE = 0x52; // R
const NEWOBJ = 0x81;
const BUILD = 0x62; // b
const NEWTRUE = 0x88;
const NEWFALSE = 0x89;
const LONG1 = 0x8a;
const LONG4 = 0x8b;
const PROTO = 0x80;
const FRAME = 0x95;
const MEMOIZE = 0x94;
const BINPUT = 0x71; // q
const LONG_BINPUT = 0x72; // r

// CPython's pickler writes list/dict items in batches of this many.
const BATCH_SIZE = 1000;
// CPython only wraps a frame in FRAME when it is at least this long.
const FRAME_SIZE_MIN = 4;
const MAX_U32 = 0xffffffff;

// fix_imports (on by default) renames Python 3 modules to their Python 2 names below protocol 3.
const PY2_MODULE_NAMES: Readonly<Record<string, string>> = { builtins: '__builtin__', copyreg: 'copy_reg' };

const utf8 = new TextEncoder();

class ByteSink {
  private buf = new Uint8Array(256);
  length = 0;

  private ensure(extra: number): void {
    const needed = this.length + extra;
    if (needed <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(needed, this.buf.length * 2));
    grown.set(this.buf.subarray(0, this.length));
    this.buf = grown;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }

  bytes(data: Uint8Array): void {
    this.ensure(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
  }

  uint(value: number, width: 2 | 4 | 8): void {
    this.ensure(width);
    const view = new DataView(this.buf.buffer, this.length, width);
    if (width === 2) view.setUint16(0, value, true);
    else if (width === 4) view.setUint32(0, value, true);
    else view.setBigUint64(0, BigInt(value), true);
    this.length += width;
  }

  int32(value: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer, this.length, 4).setInt32(0, value, true);
    this.length += 4;
  }

  float64be(value: number): void {
    this.ensure(8);
    new DataView(this.buf.buffer, this.length, 8).setFloat64(0, value, false);
    this.length += 8;
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** Minimal two's-complement little-endian bytes of `n`, as CPython's LONG1/LONG4 carry them. */
function longBytes(n: bigint): Uint8Array {
  const out: number[] = [];
  let rest = n;
  for (;;) {
    const byte = Number(BigInt.asUintN(8, rest));
    out.push(byte);
    rest >>= 8n;
    const signBitSet = (byte & 0x80) !== 0;
    if ((rest === 0n && !signBitSet) || (rest === -1n && signBitSet)) break;
  }
  return Uint8Array.from(out);
}

/** `datetime.timedelta`'s normal form for a number of seconds (fractions kept to the microsecond). */
function timedeltaParts(totalSeconds: number): [number, number, number] {
  const micros = BigInt(Math.round(totalSeconds * 1e6));
  const perDay = 86_400_000_000n;
  let days = micros / perDay;
  let rest = micros % perDay;
  if (rest < 0n) {
    days -= 1n;
    rest += perDay;
  }
  return [Number(days), Number(rest / 1_000_000n), Number(rest % 1_000_000n)];
}

class Pickler {
  private readonly out = new ByteSink();
  private readonly open = new Set<object>();
  private memoized = 0;

  constructor(
    private readonly protocol: PickleProtocol,
    private readonly memoize: boolean,
  ) {}

  private memo(): void {
    if (!this.memoize) return;
    if (this.protocol >= 4) {
      this.out.byte(MEMOIZE);
    } else if (this.memoized < 0x100) {
      this.out.byte(BINPUT);
      this.out.byte(this.memoized);
    } else {
      this.out.byte(LONG_BINPUT);
      this.out.uint(this.memoized, 4);
    }
    this.memoized++;
  }

  dump(value: PyValue): Uint8Array {
    this.save(value);
    this.out.byte(STOP);
    const body = this.out.result();
    const framed = this.protocol >= 4 && body.length >= FRAME_SIZE_MIN;
    const result = new Uint8Array(2 + (framed ? 9 : 0) + body.length);
    result[0] = PROTO;
    result[1] = this.protocol;
    if (framed) {
      result[2] = FRAME;
      new DataView(result.buffer).setBigUint64(3, BigInt(body.length), true);
    }
    result.set(body, result.length - body.length);
    return result;
  }

  private save(value: PyValue): void {
    if (value === null) return this.out.byte(NONE);
    switch (typeof value) {
      case 'boolean':
        return this.out.byte(value ? NEWTRUE : NEWFALSE);
      case 'number':
        return Number.isInteger(value) ? this.saveInt(BigInt(value)) : this.saveFloat(value);
      case 'bigint':
        return this.saveInt(value);
      case 'string':
        return this.saveString(value);
      case 'object':
        break;
      default:
        throw new PickleWriteError('unsupported_value', `cannot pickle a ${typeof value}`);
    }
    if (this.open.has(value))
      throw new PickleWriteError('cycle', 'cannot pickle a value that contains itself');
    this.open.add(value);
    try {
      this.saveObject(value);
    } finally {
      this.open.delete(value);
    }
  }

  private saveObject(value: Exclude<PyValue, null | boolean | number | bigint | string>): void {
    if (value instanceof Uint8Array) return this.saveBytes(value);
    if (Array.isArray(value)) {
      this.out.byte(EMPTY_LIST);
      this.memo();
      return this.saveItems(value);
    }
    if (value instanceof PyDateTime) return this.saveDateTime(value);
    if (value instanceof PyTimedelta) {
      return this.saveReduce(new PyGlobal('datetime', 'timedelta'), [
        value.days,
        value.seconds,
        value.microseconds,
      ]);
    }
    if (value instanceof PyTimezone) return this.saveTimezone(value);
    if (value instanceof PyGlobal) return this.saveGlobal(value.module, value.name);
    if (value instanceof PyObject) return this.saveInstance(value);
    if (isPyDict(value)) {
      this.out.byte(EMPTY_DICT);
      this.memo();
      return this.saveDictItems(value);
    }
    const kind = (value as object).constructor?.name ?? 'object';
    throw new PickleWriteError('unsupported_value', `cannot pickle a ${kind}`);
  }

  private saveInt(n: bigint): void {
    if (n >= 0n && n < 0x100n) {
      this.out.byte(BININT1);
      this.out.byte(Number(n));
    } else if (n >= 0n && n < 0x10000n) {
      this.out.byte(BININT2);
      this.out.uint(Number(n), 2);
    } else if (n >= -0x80000000n && n <= 0x7fffffffn) {
      this.out.byte(BININT);
      this.out.int32(Number(n));
    } else {
      const bytes = longBytes(n);
      if (bytes.length < 0x100) {
        this.out.byte(LONG1);
        this.out.byte(bytes.length);
      } else {
        this.out.byte(LONG4);
        this.out.int32(bytes.length);
      }
      this.out.bytes(bytes);
    }
  }

  private saveFloat(x: number): void {
    this.out.byte(BINFLOAT);
    this.out.float64be(x);
  }

  private saveString(s: string): void {
    const data = utf8.encode(s);
    if (this.protocol >= 4 && data.length < 0x100) {
      this.out.byte(SHORT_BINUNICODE);
      this.out.byte(data.length);
    } else if (data.length <= MAX_U32) {
      this.out.byte(BINUNICODE);
      this.out.uint(data.length, 4);
    } else {
      this.out.byte(BINUNICODE8);
      this.out.uint(data.length, 8);
    }
    this.out.bytes(data);
    this.memo();
  }

  private saveBytes(data: Uint8Array): void {
    if (this.protocol < 3) {
      // Protocol 2 has no bytes opcode: CPython pickles `bytes` as `_codecs.encode(latin1_text, 'latin1')`.
      if (data.length === 0) return this.saveReduce(new PyGlobal('builtins', 'bytes'), []);
      return this.saveReduce(new PyGlobal('_codecs', 'encode'), [latin1Text(data), 'latin1']);
    }
    if (data.length < 0x100) {
      this.out.byte(SHORT_BINBYTES);
      this.out.byte(data.length);
    } else if (data.length <= MAX_U32) {
      this.out.byte(BINBYTES);
      this.out.uint(data.length, 4);
    } else {
      this.out.byte(BINBYTES8);
      this.out.uint(data.length, 8);
    }
    this.out.bytes(data);
  }

  private saveItems(items: readonly PyValue[]): void {
    for (let start = 0; start < items.length; start += BATCH_SIZE) {
      const batch = items.slice(start, start + BATCH_SIZE);
      if (batch.length === 1) {
        this.save(batch[0] as PyValue);
        this.out.byte(APPEND);
      } else {
        this.out.byte(MARK);
        for (const item of batch) this.save(item);
        this.out.byte(APPENDS);
      }
    }
  }

  private saveDictItems(dict: PyDict): void {
    const keys = Object.keys(dict);
    for (let start = 0; start < keys.length; start += BATCH_SIZE) {
      const batch = keys.slice(start, start + BATCH_SIZE);
      if (batch.length === 1) {
        const key = batch[0] as string;
        this.saveString(key);
        this.save(dict[key] as PyValue);
        this.out.byte(SETITEM);
      } else {
        this.out.byte(MARK);
        for (const key of batch) {
          this.saveString(key);
          this.save(dict[key] as PyValue);
        }
        this.out.byte(SETITEMS);
      }
    }
  }

  private saveTuple(items: readonly PyValue[]): void {
    if (items.length === 0) return this.out.byte(EMPTY_TUPLE);
    if (items.length <= 3) {
      for (const item of items) this.save(item);
      this.out.byte([TUPLE1, TUPLE2, TUPLE3][items.length - 1] as number);
      return;
    }
    this.out.byte(MARK);
    for (const item of items) this.save(item);
    this.out.byte(TUPLE);
  }

  /** `callable(*args)`, as CPython's save_reduce writes a plain `__reduce__` result. */
  private saveReduce(callable: PyGlobal, args: readonly PyValue[]): void {
    this.saveGlobal(callable.module, callable.name);
    this.saveTuple(args);
    this.out.byte(REDUCE);
  }

  private saveGlobal(module: string, name: string): void {
    if (this.protocol >= 4) {
      this.saveString(module);
      this.saveString(name);
      this.out.byte(STACK_GLOBAL);
      return;
    }
    const dot = name.lastIndexOf('.');
    if (dot >= 0) {
      // GLOBAL cannot name a nested attribute; CPython writes getattr(parent, last) instead.
      this.saveReduce(new PyGlobal('builtins', 'getattr'), [
        new PyGlobal(module, name.slice(0, dot)),
        name.slice(dot + 1),
      ]);
      return;
    }
    const mapped = this.protocol < 3 ? (PY2_MODULE_NAMES[module] ?? module) : module;
    if (`${mapped}${name}`.includes('\n')) {
      throw new PickleWriteError('unsupported_value', `global name ${JSON.stringify(`${module}.${name}`)}`);
    }
    this.out.byte(GLOBAL);
    this.out.bytes(utf8.encode(`${mapped}\n${name}\n`));
  }

  private saveDateTime(dt: PyDateTime): void {
    // datetime.__reduce_ex__: (datetime, (state,)) or (datetime, (state, tzinfo)); the 10-byte state is
    // year (2 bytes, big-endian), month, day, hour, minute, second, microsecond (3 bytes, big-endian).
    const us = dt.microsecond;
    const state = Uint8Array.from([
      dt.year >> 8,
      dt.year & 0xff,
      dt.month,
      dt.day,
      dt.hour,
      dt.minute,
      dt.second,
      (us >> 16) & 0xff,
      (us >> 8) & 0xff,
      us & 0xff,
    ]);
    this.saveReduce(new PyGlobal('datetime', 'datetime'), dt.tz === undefined ? [state] : [state, dt.tz]);
  }

  private saveTimezone(tz: PyTimezone): void {
    if (tz.offsetSeconds !== undefined) {
      const offset = new PyTimedelta(...timedeltaParts(tz.offsetSeconds));
      return this.saveReduce(new PyGlobal('datetime', 'timezone'), [offset]);
    }
    if (tz.name !== undefined) {
      // zoneinfo.ZoneInfo.__reduce__: (ZoneInfo._unpickle, (key, from_cache)); the bound classmethod
      // reduces to getattr(ZoneInfo, '_unpickle') at every protocol.
      this.saveReduce(new PyGlobal('builtins', 'getattr'), [
        new PyGlobal('zoneinfo', 'ZoneInfo'),
        '_unpickle',
      ]);
      this.saveTuple([tz.name, 1]);
      this.out.byte(REDUCE);
      return;
    }
    throw new PickleWriteError('unsupported_value', 'a timezone needs an offset or a zone name');
  }

  /** CPython's default for instances of a plain class: cls.__new__(cls, *args), then items and state. */
  private saveInstance(obj: PyObject): void {
    this.saveGlobal(obj.module, obj.name);
    this.saveTuple(obj.args);
    this.out.byte(NEWOBJ);
    if (obj.listItems.length > 0) this.saveItems(obj.listItems);
    if (Object.keys(obj.dictItems).length > 0) this.saveDictItems(obj.dictItems);
    if (obj.state !== undefined && obj.state !== null) {
      this.save(obj.state);
      this.out.byte(BUILD);
    }
  }
}

/** Each byte as the code point of the same value (what `bytes.decode('latin1')` gives). */
function latin1Text(data: Uint8Array): string {
  let text = '';
  // Chunked: spreading a large array into fromCharCode would overflow the call stack.
  for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  return text;
}

/** Pickles `value` like CPython's `pickle.dumps(value, protocol)` would (memoizing only if asked). */
export function pickle(value: PyValue, options: PickleOptions = {}): Uint8Array {
  const protocol = options.protocol ?? 4;
  if (![2, 3, 4, 5].includes(protocol)) {
    throw new PickleWriteError('bad_protocol', `unsupported pickle protocol ${String(protocol)}`);
  }
  return new Pickler(protocol, options.memoize ?? false).dump(value);
}
