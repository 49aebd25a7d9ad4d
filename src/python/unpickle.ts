// Safe pickle decoder: CPython pickle bytes (protocols 0–5) → PyValue data. Nothing is ever looked up or run
// by name; the VM is iterative, nesting and size are bounded, and every failure is an UnpickleError.
//
// Why not npm `pickleparser` (0.2.1, evaluated): it builds dicts as `{}` and applies BUILD state with
// Object.assign (a `__proto__` key rewires prototypes), calls REDUCE callables, reads LONG1 as unsigned,
// knows nothing of datetime / `_codecs.encode` / tz pickles, throws untyped Errors and has no depth bound.

import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  type PyDict,
  type PyValue,
} from './pyvalues.js';

export type UnpickleErrorCode =
  | 'truncated'
  | 'no_stop'
  | 'bad_opcode'
  | 'unsupported_opcode'
  | 'unsupported_protocol'
  | 'stack_underflow'
  | 'bad_memo'
  | 'bad_value'
  | 'too_deep'
  | 'too_large';

export class UnpickleError extends Error {
  override readonly name = 'UnpickleError';

  constructor(
    readonly code: UnpickleErrorCode,
    message: string,
    /** Byte offset of the opcode being decoded when the error was found. */
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(`${message} (at byte ${offset})`, options);
  }
}

export interface UnpickleOptions {
  /**
   * Deepest container nesting accepted (dicts, lists, tuples, sets, PyObjects; a flat dict is 1). Deeper or
   * cyclic values fail with `too_deep`. Default 200.
   */
  maxDepth?: number;
  /** Most container elements (items, dict entries, call arguments) one pickle may create. Default 10,000,000. */
  maxItems?: number;
}

const DEFAULT_MAX_DEPTH = 200;
const DEFAULT_MAX_ITEMS = 10_000_000;
/** CPython 3.11's limit on the decimal digits int(str) accepts; text LONG/INT are parsed that way. */
const MAX_DECIMAL_DIGITS = 4300;
/** Bound on the work of stringifying one tuple dict key. */
const MAX_KEY_ITEMS = 10_000;
/** Bound on chained copyreg wrappers (`__newobj__(__newobj__, ...)`) unwrapped before giving up. */
const MAX_UNWRAP = 8;

// Non-fatal on purpose: CPython writes lone surrogates with 'surrogatepass', which is invalid UTF-8; each bad
// byte becomes U+FFFD (WHATWG decoding, the same as Python's decode('utf-8', 'replace')).
const utf8 = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();
const FLOAT_SCRATCH = new Float64Array(1);
const FLOAT_BYTES = new Uint8Array(FLOAT_SCRATCH.buffer);
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
/** What a lone surrogate in a text (protocol 0) string becomes: the same as its surrogatepass UTF-8 bytes. */
const SURROGATE_REPLACEMENT = '\uFFFD\uFFFD\uFFFD';
const MAX_INTERNED_LENGTH = 64;
const INTERNED_SLOTS = 4096;
/** Recently decoded short ASCII strings by hash slot, with their bytes (a collision just replaces the entry). */
const internedStrings: string[] = new Array<string>(INTERNED_SLOTS).fill('');
const internedLengths = new Uint8Array(INTERNED_SLOTS);
const internedBytes = new Uint8Array(INTERNED_SLOTS * MAX_INTERNED_LENGTH);

// Opcodes, named as in CPython's Lib/pickle.py.
const MARK = 0x28;
const STOP = 0x2e;
const POP = 0x30;
const POP_MARK = 0x31;
const DUP = 0x32;
const FLOAT = 0x46;
const INT = 0x49;
const BININT = 0x4a;
const BININT1 = 0x4b;
const LONG = 0x4c;
const BININT2 = 0x4d;
const NONE = 0x4e;
const PERSID = 0x50;
const BINPERSID = 0x51;
const REDUCE = 0x52;
const STRING = 0x53;
const BINSTRING = 0x54;
const SHORT_BINSTRING = 0x55;
const UNICODE = 0x56;
const BINUNICODE = 0x58;
const APPEND = 0x61;
const BUILD = 0x62;
const GLOBAL = 0x63;
const DICT = 0x64;
const EMPTY_DICT = 0x7d;
const APPENDS = 0x65;
const GET = 0x67;
const BINGET = 0x68;
const INST = 0x69;
const LONG_BINGET = 0x6a;
const LIST = 0x6c;
const EMPTY_LIST = 0x5d;
const OBJ = 0x6f;
const PUT = 0x70;
const BINPUT = 0x71;
const LONG_BINPUT = 0x72;
const SETITEM = 0x73;
const TUPLE = 0x74;
const EMPTY_TUPLE = 0x29;
const SETITEMS = 0x75;
const BINFLOAT = 0x47;
const PROTO = 0x80;
const NEWOBJ = 0x81;
const EXT1 = 0x82;
const EXT2 = 0x83;
const EXT4 = 0x84;
const TUPLE1 = 0x85;
const TUPLE2 = 0x86;
const TUPLE3 = 0x87;
const NEWTRUE = 0x88;
const NEWFALSE = 0x89;
const LONG1 = 0x8a;
const LONG4 = 0x8b;
const BINBYTES = 0x42;
const SHORT_BINBYTES = 0x43;
const SHORT_BINUNICODE = 0x8c;
const BINUNICODE8 = 0x8d;
const BINBYTES8 = 0x8e;
const EMPTY_SET = 0x8f;
const ADDITEMS = 0x90;
const FROZENSET = 0x91;
const NEWOBJ_EX = 0x92;
const STACK_GLOBAL = 0x93;
const MEMOIZE = 0x94;
const FRAME = 0x95;
const BYTEARRAY8 = 0x96;
const NEXT_BUFFER = 0x97;
const READONLY_BUFFER = 0x98;

/**
 * Decodes one pickle. Dicts become null-prototype objects; non-string keys are stringified: ints as decimal,
 * floats with JS `String()`, `True`/`False`/`None` as Python prints them, bytes as latin-1 text, tuples and
 * frozensets as compact JSON arrays of their items (`(1, 'a')` → `[1,"a"]`), globals as `module.name`; a
 * later duplicate key wins. Sets become arrays in pickle order. Ints within ±(2^53−1) are numbers, others
 * bigint. Data after STOP is ignored.
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions = {}): PyValue {
  // A plain view of Buffers and other subclasses, so `slice` copies and results are plain Uint8Arrays.
  const input =
    data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  const machine = reusableMachine;
  machine.reset(input, options.maxItems ?? DEFAULT_MAX_ITEMS);
  try {
    const result = machine.run();
    // Each opcode adds at most one level of nesting, so a pickle with few container opcodes cannot be too
    // deep, unless a container was referenced twice (memo, DUP), the only way to build a cycle. Event dicts
    // take neither branch; anything else is walked once.
    if (machine.containerOps > maxDepth || machine.sharedContainer || maxDepth < 1) {
      checkDepth(result, maxDepth, machine.opStart);
    }
    return result;
  } catch (err) {
    if (err instanceof UnpickleError) throw err;
    const code: UnpickleErrorCode = err instanceof RangeError ? 'too_large' : 'bad_value';
    throw new UnpickleError(code, `cannot decode pickle: ${String(err)}`, machine.opStart, { cause: err });
  } finally {
    machine.release();
  }
}

function isContainer(value: PyValue): value is PyValue[] | PyDict | PyObject {
  return (
    typeof value === 'object' &&
    value !== null &&
    (Array.isArray(value) || value instanceof PyObject || Object.getPrototypeOf(value) === null)
  );
}

function isDict(value: PyValue | undefined): value is PyDict {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === null;
}

function newDict(): PyDict {
  // Same object as Object.create(null), but V8 gives it fast properties; Object.create(null) starts out in
  // slow dictionary mode, which doubles the cost of filling an event dict.
  return Object.setPrototypeOf({}, null) as PyDict;
}

function normalizeModule(module: string): string {
  // Protocols < 3 write Python 2 module names (pickle's fix_imports); CPython maps them back on load.
  if (module === '__builtin__') return 'builtins';
  if (module === 'copy_reg') return 'copyreg';
  return module;
}

function intFromBigInt(value: bigint): number | bigint {
  return value >= -9007199254740991n && value <= 9007199254740991n ? Number(value) : value;
}

/** Arrays grown past this by one pickle are dropped after it rather than kept for the next. */
const MAX_KEPT_LENGTH = 4096;

/**
 * The VM state of an `unpickle` call. One instance is reused from call to call (decoding never calls out, so
 * calls cannot nest): its stack, mark and memo arrays stay allocated between events.
 */
class Machine {
  pos = 0;
  opStart = 0;
  private data: Uint8Array = new Uint8Array(0);
  private maxItems = 0;
  private stack: PyValue[] = [];
  private marks: number[] = [];
  /** Index of the innermost mark: values below it belong to an outer frame and must not be popped. */
  private floor = 0;
  private memo: PyValue[] = [];
  private memoCount = 0;
  private items = 0;
  /** Opcodes run that may create a container or put one inside another: a bound on the result's depth. */
  containerOps = 0;
  /** A container was pushed a second time (memo get, DUP), so the result may share or cycle. */
  sharedContainer = false;

  reset(data: Uint8Array, maxItems: number): void {
    this.data = data;
    this.maxItems = maxItems;
    this.pos = 0;
    this.opStart = 0;
    this.floor = 0;
    this.memoCount = 0;
    this.items = 0;
    this.containerOps = 0;
    this.sharedContainer = false;
  }

  /** Lets go of everything the last call decoded, so nothing stays reachable from here. */
  release(): void {
    this.data = EMPTY_BYTES;
    if (this.stack.length > MAX_KEPT_LENGTH) this.stack = [];
    else if (this.stack.length > 0) this.stack.length = 0;
    if (this.marks.length > MAX_KEPT_LENGTH) this.marks = [];
    else if (this.marks.length > 0) this.marks.length = 0;
    if (this.memo.length > MAX_KEPT_LENGTH) this.memo = [];
    else if (this.memo.length > 0) this.memo.length = 0;
  }

  run(): PyValue {
    const data = this.data;
    const end = data.length;
    const stack = this.stack;
    const memo = this.memo;
    for (;;) {
      let pos = this.pos;
      // The three opcodes that make up most of an event (MEMOIZE after every value, short strings, memo gets
      // of strings), with the position in a local; anything unusual about them (a sparse memo, a truncated
      // string, a miss) falls through to the switch below, which handles and reports it.
      for (;;) {
        const op = data[pos];
        if (op === MEMOIZE) {
          if (this.memoCount !== memo.length || stack.length <= this.floor) break;
          memo.push(stack[stack.length - 1]!);
          this.memoCount++;
          pos++;
        } else if (op === SHORT_BINUNICODE) {
          const length = data[pos + 1];
          if (length === undefined || pos + 2 + length > end) break;
          stack.push(this.decodeUtf8(pos + 2, length));
          pos += 2 + length;
        } else if (op === BINGET) {
          const index = data[pos + 1];
          if (index === undefined) break;
          const value = memo[index];
          if (value === undefined || (typeof value === 'object' && value !== null)) break;
          stack.push(value);
          pos += 2;
        } else {
          break;
        }
      }
      this.pos = pos;
      if (pos >= end) throw this.fail('no_stop', 'input ended without STOP');
      this.opStart = pos;
      const op = data[this.pos++]!;
      switch (op) {
        // Containers and the MARK machinery — the hot path of a pickled dict.
        case EMPTY_DICT:
          this.containerOps++;
          stack.push(newDict());
          break;
        case EMPTY_LIST:
        case EMPTY_SET:
        case EMPTY_TUPLE:
          this.containerOps++;
          stack.push([]);
          break;
        case MARK:
          this.marks.push(stack.length);
          this.floor = stack.length;
          break;
        case SETITEMS: {
          const mark = this.popMark();
          this.setItems(this.targetBelow(mark), mark);
          break;
        }
        case SETITEM: {
          this.need(2);
          const value = stack.pop()!;
          const key = stack.pop()!;
          this.need(1);
          this.setItem(stack[stack.length - 1]!, key, value);
          this.count(1);
          break;
        }
        case APPENDS: {
          const mark = this.popMark();
          this.appendItems(this.targetBelow(mark), mark, false);
          break;
        }
        case APPEND: {
          this.need(2);
          const value = stack.pop()!;
          this.appendItems(stack[stack.length - 1]!, -1, false, value);
          break;
        }
        case ADDITEMS: {
          const mark = this.popMark();
          this.appendItems(this.targetBelow(mark), mark, true);
          break;
        }
        case DICT: {
          this.containerOps++;
          const mark = this.popMark();
          const dict = newDict();
          this.setItems(dict, mark);
          stack.push(dict);
          break;
        }
        case LIST:
        case TUPLE:
        case FROZENSET: {
          this.containerOps++;
          const mark = this.popMark();
          this.count(stack.length - mark);
          stack.push(stack.splice(mark));
          break;
        }
        case TUPLE1: {
          this.containerOps++;
          this.need(1);
          stack.push([stack.pop()!]);
          this.count(1);
          break;
        }
        case TUPLE2: {
          this.containerOps++;
          this.need(2);
          const b = stack.pop()!;
          const a = stack.pop()!;
          stack.push([a, b]);
          this.count(2);
          break;
        }
        case TUPLE3: {
          this.containerOps++;
          this.need(3);
          const c = stack.pop()!;
          const b = stack.pop()!;
          const a = stack.pop()!;
          stack.push([a, b, c]);
          this.count(3);
          break;
        }
        case POP:
          // CPython: POP right after a MARK discards the mark.
          if (this.marks.length > 0 && this.marks[this.marks.length - 1] === stack.length) this.popMark();
          else this.pop();
          break;
        case POP_MARK:
          this.truncate(this.popMark());
          break;
        case DUP: {
          const value = this.top();
          if (isContainer(value)) this.sharedContainer = true;
          stack.push(value);
          break;
        }

        // Memo.
        case BINPUT:
          this.memoPut(this.u8());
          break;
        case LONG_BINPUT:
          this.memoPut(this.u32());
          break;
        case MEMOIZE:
          this.memoPut(this.memoCount);
          break;
        case PUT:
          this.memoPut(this.lineIndex());
          break;
        case BINGET:
          stack.push(this.memoGet(this.u8()));
          break;
        case LONG_BINGET:
          stack.push(this.memoGet(this.u32()));
          break;
        case GET:
          stack.push(this.memoGet(this.lineIndex()));
          break;

        // Scalars.
        case SHORT_BINUNICODE:
          stack.push(this.utf8(this.u8()));
          break;
        case BINUNICODE:
          stack.push(this.utf8(this.u32()));
          break;
        case BINUNICODE8:
          stack.push(this.utf8(this.u64()));
          break;
        case BININT1:
          stack.push(this.u8());
          break;
        case BININT2:
          stack.push(this.u16());
          break;
        case BININT:
          stack.push(this.i32());
          break;
        case BINFLOAT: {
          const at = this.take(8);
          // Big-endian on the wire; FLOAT_BYTES is the little-endian view of FLOAT_SCRATCH.
          for (let i = 0; i < 8; i++) FLOAT_BYTES[7 - i] = data[at + i]!;
          stack.push(FLOAT_SCRATCH[0]!);
          break;
        }
        case NONE:
          stack.push(null);
          break;
        case NEWTRUE:
          stack.push(true);
          break;
        case NEWFALSE:
          stack.push(false);
          break;
        case LONG1:
          stack.push(this.long(this.u8()));
          break;
        case LONG4:
          stack.push(this.long(this.nonNegative(this.i32(), 'LONG4')));
          break;
        case SHORT_BINBYTES:
          stack.push(this.bytes(this.u8()));
          break;
        case BINBYTES:
          stack.push(this.bytes(this.u32()));
          break;
        case BINBYTES8:
        case BYTEARRAY8:
          stack.push(this.bytes(this.u64()));
          break;
        case SHORT_BINSTRING:
          stack.push(this.latin1(this.u8()));
          break;
        case BINSTRING:
          stack.push(this.latin1(this.nonNegative(this.i32(), 'BINSTRING')));
          break;

        // Text (protocol 0) scalars.
        case INT: {
          const text = this.line();
          stack.push(text === '00' ? false : text === '01' ? true : this.parseDecimal(text));
          break;
        }
        case LONG: {
          const text = this.line();
          stack.push(this.parseDecimal(text.endsWith('L') ? text.slice(0, -1) : text));
          break;
        }
        case FLOAT:
          stack.push(this.parseFloat(this.line()));
          break;
        case STRING:
          stack.push(this.quotedString(this.line()));
          break;
        case UNICODE:
          stack.push(this.rawUnicodeEscape());
          break;

        // Names and calls: only ever recorded, never resolved.
        case GLOBAL: {
          const module = this.line();
          stack.push(new PyGlobal(normalizeModule(module), this.line()));
          break;
        }
        case STACK_GLOBAL: {
          this.need(2);
          const name = stack.pop()!;
          const module = stack.pop()!;
          if (typeof module !== 'string' || typeof name !== 'string') {
            throw this.fail('bad_value', 'STACK_GLOBAL needs two strings');
          }
          stack.push(new PyGlobal(normalizeModule(module), name));
          break;
        }
        case REDUCE: {
          this.containerOps++;
          this.need(2);
          const args = stack.pop()!;
          const callable = stack.pop()!;
          stack.push(this.call(callable, this.argsOf(args, 'REDUCE')));
          break;
        }
        case NEWOBJ: {
          this.containerOps++;
          this.need(2);
          const args = stack.pop()!;
          const cls = stack.pop()!;
          stack.push(this.call(cls, this.argsOf(args, 'NEWOBJ')));
          break;
        }
        case NEWOBJ_EX: {
          this.containerOps++;
          this.need(3);
          const kwargs = stack.pop()!;
          const args = this.argsOf(stack.pop()!, 'NEWOBJ_EX');
          const cls = stack.pop()!;
          if (!isDict(kwargs)) throw this.fail('bad_value', 'NEWOBJ_EX keyword arguments must be a dict');
          stack.push(this.call(cls, withKwargs(args, kwargs)));
          break;
        }
        case OBJ: {
          this.containerOps++;
          const mark = this.popMark();
          const items = stack.splice(mark);
          if (items.length === 0) throw this.fail('stack_underflow', 'OBJ without a class');
          this.count(items.length);
          stack.push(this.call(items[0]!, items.slice(1)));
          break;
        }
        case INST: {
          this.containerOps++;
          const module = normalizeModule(this.line());
          const name = this.line();
          const mark = this.popMark();
          this.count(stack.length - mark);
          stack.push(this.instantiate(module, name, stack.splice(mark)));
          break;
        }
        case BUILD: {
          this.containerOps++;
          this.need(2);
          const state = stack.pop()!;
          this.build(stack[stack.length - 1]!, state);
          break;
        }

        // Framing and protocol.
        case PROTO: {
          const version = this.u8();
          if (version > 5)
            throw this.fail('unsupported_protocol', `pickle protocol ${version} is not supported`);
          break;
        }
        case FRAME: {
          // A frame only groups opcodes for buffered reading; the whole input is already here.
          const length = this.u64();
          if (length > end - this.pos) throw this.fail('truncated', 'pickle data was truncated (frame)');
          break;
        }
        case STOP:
          this.need(1);
          return stack.pop()!;
        case READONLY_BUFFER:
          this.need(1);
          break;

        case PERSID:
        case BINPERSID:
        case EXT1:
        case EXT2:
        case EXT4:
        case NEXT_BUFFER:
          throw this.fail(
            'unsupported_opcode',
            `opcode 0x${op.toString(16)} needs objects from outside the pickle`,
          );
        default:
          throw this.fail('bad_opcode', `unknown opcode 0x${op.toString(16)}`);
      }
    }
  }

  fail(code: UnpickleErrorCode, message: string): UnpickleError {
    return new UnpickleError(code, message, this.opStart);
  }

  // ---- stack ----

  /** Throws unless at least `n` values sit above the innermost mark. */
  private need(n: number): void {
    if (this.stack.length - this.floor < n) throw this.fail('stack_underflow', 'unpickling stack underflow');
  }

  private pop(): PyValue {
    this.need(1);
    return this.stack.pop()!;
  }

  private top(): PyValue {
    this.need(1);
    return this.stack[this.stack.length - 1]!;
  }

  /** Drops stack values above `length`; pops, because assigning `length` is a slow runtime call in V8. */
  private truncate(length: number): void {
    const stack = this.stack;
    while (stack.length > length) stack.pop();
  }

  private popMark(): number {
    const marks = this.marks;
    const mark = marks.pop();
    if (mark === undefined) throw this.fail('stack_underflow', 'no MARK on the stack');
    this.floor = marks.length > 0 ? marks[marks.length - 1]! : 0;
    return mark;
  }

  /** The container a mark-based op (SETITEMS, APPENDS, ADDITEMS) applies to: the value just below the mark. */
  private targetBelow(mark: number): PyValue {
    if (mark <= this.floor) throw this.fail('stack_underflow', 'nothing below the MARK to add to');
    return this.stack[mark - 1]!;
  }

  private count(n: number): void {
    this.items += n;
    if (this.items > this.maxItems) throw this.fail('too_large', `more than ${this.maxItems} items`);
  }

  // ---- containers ----

  private setItems(target: PyValue, mark: number): void {
    const stack = this.stack;
    const n = stack.length - mark;
    if (n % 2 !== 0) throw this.fail('bad_value', 'odd number of items for a dict');
    this.count(n / 2);
    const dict = this.dictOf(target);
    for (let i = mark; i < stack.length; i += 2) {
      const key = stack[i]!;
      dict[typeof key === 'string' ? key : this.keyString(key)] = stack[i + 1]!;
    }
    this.truncate(mark);
  }

  /** Where SETITEM(S) put entries: a dict, or the dict items of a dict-subclass PyObject. */
  private dictOf(target: PyValue): PyDict {
    if (isDict(target)) return target;
    if (target instanceof PyObject) return target.dictItems;
    throw this.fail('bad_value', 'SETITEM on something that is not a dict');
  }

  private setItem(target: PyValue, key: PyValue, value: PyValue): void {
    const dict = this.dictOf(target);
    dict[typeof key === 'string' ? key : this.keyString(key)] = value;
  }

  /** Appends stack[mark..] (or `single` when mark < 0) to a list, set or list-like PyObject. */
  private appendItems(target: PyValue, mark: number, isSet: boolean, single?: PyValue): void {
    const list = Array.isArray(target)
      ? target
      : !isSet && target instanceof PyObject
        ? target.listItems
        : undefined;
    if (list === undefined)
      throw this.fail('bad_value', `${isSet ? 'ADDITEMS' : 'APPEND'} on a non-container`);
    const stack = this.stack;
    if (mark < 0) {
      this.count(1);
      list.push(single!);
      return;
    }
    this.count(stack.length - mark);
    for (let i = mark; i < stack.length; i++) list.push(stack[i]!);
    this.truncate(mark);
  }

  private keyString(key: PyValue): string {
    switch (typeof key) {
      case 'number':
        return String(key);
      case 'bigint':
        return key.toString();
      case 'boolean':
        return key ? 'True' : 'False';
    }
    if (key === null) return 'None';
    if (key instanceof Uint8Array) return latin1Of(key);
    if (key instanceof PyGlobal) return `${key.module}.${key.name}`;
    if (Array.isArray(key)) return this.tupleKey(key);
    throw this.fail('bad_value', 'unsupported dict key type');
  }

  /** Compact JSON of a (possibly nested) tuple key, built without recursion. */
  private tupleKey(root: PyValue[]): string {
    let out = '[';
    const arrays: PyValue[][] = [root];
    const next: number[] = [0];
    let budget = MAX_KEY_ITEMS;
    while (arrays.length > 0) {
      const top = arrays.length - 1;
      const array = arrays[top]!;
      const i = next[top]!;
      if (i >= array.length) {
        out += ']';
        arrays.pop();
        next.pop();
        continue;
      }
      next[top] = i + 1;
      if (--budget < 0) throw this.fail('too_large', 'dict key too large');
      if (i > 0) out += ',';
      const item = array[i]!;
      if (Array.isArray(item)) {
        out += '[';
        arrays.push(item);
        next.push(0);
      } else if (
        typeof item === 'string' ||
        typeof item === 'number' ||
        typeof item === 'boolean' ||
        item === null
      ) {
        out += JSON.stringify(item);
      } else if (typeof item === 'bigint') {
        out += item.toString();
      } else if (item instanceof Uint8Array) {
        out += JSON.stringify(latin1Of(item));
      } else if (item instanceof PyGlobal) {
        out += JSON.stringify(`${item.module}.${item.name}`);
      } else {
        throw this.fail('bad_value', 'unsupported item in a tuple dict key');
      }
    }
    return out;
  }

  // ---- memo ----

  private memoPut(index: number): void {
    const value = this.top();
    if (this.memo[index] === undefined) this.memoCount++;
    this.memo[index] = value;
  }

  private memoGet(index: number): PyValue {
    const value = this.memo[index];
    if (value === undefined) throw this.fail('bad_memo', `memo key ${index} was never stored`);
    if (typeof value === 'object' && value !== null && isContainer(value)) this.sharedContainer = true;
    return value;
  }

  private lineIndex(): number {
    const text = this.line();
    if (!/^\d{1,10}$/.test(text)) throw this.fail('bad_value', 'bad memo index');
    return Number(text);
  }

  // ---- reading ----

  /** Claims the next `n` input bytes and returns where they start; checked before anything is allocated. */
  private take(n: number): number {
    const at = this.pos;
    if (n > this.data.length - at) throw this.fail('truncated', 'pickle data was truncated');
    this.pos = at + n;
    return at;
  }

  private u8(): number {
    return this.data[this.take(1)]!;
  }

  private u16(): number {
    const at = this.take(2);
    const d = this.data;
    return d[at]! | (d[at + 1]! << 8);
  }

  private i32(): number {
    const at = this.take(4);
    const d = this.data;
    return d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24);
  }

  private u32(): number {
    return this.i32() >>> 0;
  }

  /** A 64-bit length; beyond 2^53 it is imprecise but far larger than any input, so `take` rejects it. */
  private u64(): number {
    const low = this.u32();
    return this.u32() * 4294967296 + low;
  }

  private nonNegative(n: number, what: string): number {
    if (n < 0) throw this.fail('bad_value', `${what} has a negative byte count`);
    return n;
  }

  private utf8(length: number): string {
    return this.decodeUtf8(this.take(length), length);
  }

  private decodeUtf8(at: number, length: number): string {
    const d = this.data;
    if (length === 0) return '';
    if (length <= MAX_INTERNED_LENGTH) {
      // Most strings in an event are the same short ASCII keys and names, event after event: find them in a
      // cache instead of building (and later re-internalizing) a new string each time. The slot comes from a
      // few sampled bytes; names often differ only near the end (`verify_bgp_0012`, `verify_bgp_0013`), so
      // the last three are among them (overlapping below three bytes, which is harmless).
      const last = at + length - 1;
      const head = d[at]! | (d[at + (length >> 1)]! << 8) | (length << 16);
      const tail =
        d[last]! | (d[last - (length > 1 ? 1 : 0)]! << 8) | (d[last - (length > 2 ? 2 : 0)]! << 16);
      const hash = Math.imul(head, 0x9e3779b1) ^ Math.imul(tail, 0x85ebca6b);
      const slot = (hash ^ (hash >>> 15)) & (INTERNED_SLOTS - 1);
      const base = slot * MAX_INTERNED_LENGTH;
      // The cached bytes, not the cached string, are compared: typed-array reads, whatever V8 made of the string.
      if (internedLengths[slot] === length) {
        let i = 0;
        while (i < length && internedBytes[base + i] === d[at + i]) i++;
        if (i === length) return internedStrings[slot]!;
      }
      const bytes = d.subarray(at, at + length);
      for (let i = 0; i < length; i++) if (bytes[i]! >= 0x80) return utf8.decode(bytes);
      const text = utf8.decode(bytes);
      internedBytes.set(bytes, base);
      internedLengths[slot] = length;
      internedStrings[slot] = text;
      return text;
    }
    return utf8.decode(d.subarray(at, at + length));
  }

  private latin1(length: number): string {
    const at = this.take(length);
    return latin1Of(this.data.subarray(at, at + length));
  }

  private bytes(length: number): Uint8Array {
    const at = this.take(length);
    // A copy, so the result does not pin the (possibly large, reused) input buffer.
    return this.data.slice(at, at + length);
  }

  /** A little-endian two's-complement integer of `length` bytes (LONG1/LONG4). */
  private long(length: number): number | bigint {
    const at = this.take(length);
    const d = this.data;
    if (length === 0) return 0;
    const negative = (d[at + length - 1]! & 0x80) !== 0;
    if (length <= 6) {
      let value = 0;
      for (let i = at + length - 1; i >= at; i--) value = value * 256 + d[i]!;
      return negative ? value - 2 ** (8 * length) : value;
    }
    let hex = '0x';
    for (let i = at + length - 1; i >= at; i--) hex += HEX[d[i]!];
    let value = BigInt(hex);
    if (negative) value -= 1n << BigInt(8 * length);
    return intFromBigInt(value);
  }

  /** One `\n`-terminated line of a text opcode, as UTF-8. */
  private line(): string {
    const start = this.pos;
    const newline = this.data.indexOf(0x0a, start);
    if (newline < 0) throw this.fail('truncated', 'pickle data was truncated (no end of line)');
    this.pos = newline + 1;
    return this.decodeUtf8(start, newline - start);
  }

  private parseDecimal(text: string): number | bigint {
    if (!/^[+-]?\d+$/.test(text)) throw this.fail('bad_value', 'bad integer literal');
    if (text.length > MAX_DECIMAL_DIGITS) throw this.fail('too_large', 'integer literal too long');
    return text.length <= 15 ? Number(text) : intFromBigInt(BigInt(text));
  }

  private parseFloat(text: string): number {
    const lower = text.trim().toLowerCase();
    const unsigned = lower.replace(/^[+-]/, '');
    const sign = lower.startsWith('-') ? -1 : 1;
    if (unsigned === 'inf' || unsigned === 'infinity') return sign * Infinity;
    if (unsigned === 'nan') return NaN;
    if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/.test(lower))
      throw this.fail('bad_value', 'bad float literal');
    return Number(lower);
  }

  /** Protocol 0 STRING: a Python 2 str repr with quotes and backslash escapes, decoded as latin-1. */
  private quotedString(text: string): string {
    const quote = text[0];
    if (text.length < 2 || (quote !== "'" && quote !== '"') || text[text.length - 1] !== quote) {
      throw this.fail('bad_value', 'the STRING opcode argument must be quoted');
    }
    const body = text.slice(1, -1);
    if (!body.includes('\\')) return body;
    let out = '';
    for (let i = 0; i < body.length; i++) {
      const ch = body[i]!;
      if (ch !== '\\' || i + 1 >= body.length) {
        out += ch;
        continue;
      }
      const esc = body[++i]!;
      const simple = SIMPLE_ESCAPES[esc];
      if (simple !== undefined) {
        out += simple;
      } else if (esc === '\n') {
        continue;
      } else if (esc === 'x') {
        const hex = body.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw this.fail('bad_value', 'bad \\x escape in STRING');
        out += String.fromCharCode(parseInt(hex, 16));
        i += 2;
      } else if (esc >= '0' && esc <= '7') {
        const octal = /^[0-7]{1,3}/.exec(body.slice(i, i + 3))![0];
        out += String.fromCharCode(parseInt(octal, 8) & 0xff);
        i += octal.length - 1;
      } else {
        out += '\\' + esc;
      }
    }
    return out;
  }

  /** Protocol 0 UNICODE: latin-1 bytes with raw-unicode-escape `\uXXXX` / `\UXXXXXXXX` escapes. */
  private rawUnicodeEscape(): string {
    const start = this.pos;
    const d = this.data;
    const end = d.indexOf(0x0a, start);
    if (end < 0) throw this.fail('truncated', 'pickle data was truncated (no end of line)');
    this.pos = end + 1;
    let out = '';
    let i = start;
    while (i < end) {
      const byte = d[i]!;
      if (byte !== 0x5c) {
        out += String.fromCharCode(byte);
        i++;
        continue;
      }
      // CPython: an escape counts only after an odd run of backslashes; the run itself is literal.
      let run = 0;
      while (i < end && d[i] === 0x5c) {
        run++;
        i++;
      }
      const marker = i < end ? d[i] : undefined;
      if (run % 2 === 0 || (marker !== 0x75 && marker !== 0x55)) {
        out += '\\'.repeat(run);
        continue;
      }
      out += '\\'.repeat(run - 1);
      const digits = marker === 0x75 ? 4 : 8;
      if (end - (i + 1) < digits) throw this.fail('bad_value', 'truncated \\u escape in UNICODE');
      let code = 0;
      for (let k = i + 1; k <= i + digits; k++) {
        const v = hexValue(d[k]!);
        if (v < 0) throw this.fail('bad_value', 'bad \\u escape in UNICODE');
        code = code * 16 + v;
      }
      if (code > 0x10ffff) throw this.fail('bad_value', '\\U escape out of range in UNICODE');
      out += code >= 0xd800 && code <= 0xdfff ? SURROGATE_REPLACEMENT : String.fromCodePoint(code);
      i += digits + 1;
    }
    return out;
  }

  // ---- calls and objects ----

  private argsOf(args: PyValue, op: string): PyValue[] {
    if (!Array.isArray(args)) throw this.fail('bad_value', `${op} arguments must be a tuple`);
    return args;
  }

  private call(callable: PyValue, args: PyValue[]): PyValue {
    if (!(callable instanceof PyGlobal)) throw this.fail('bad_value', 'only a global can be called');
    this.count(args.length);
    return this.instantiate(callable.module, callable.name, args);
  }

  /**
   * What calling `module.name(*args)` stands for. Only a fixed set of well-known callables is understood
   * (datetime, tz, bytes, sets, OrderedDict, copyreg wrappers); everything else is recorded as a PyObject.
   */
  private instantiate(module: string, name: string, args: PyValue[]): PyValue {
    for (let unwrapped = 0; module === 'copyreg' && unwrapped < MAX_UNWRAP; unwrapped++) {
      const cls = args[0];
      if (!(cls instanceof PyGlobal)) break;
      if (name === '_reconstructor') {
        // copyreg._reconstructor(cls, base, state) (protocols 0/1): state is None for plain objects and the
        // contents for subclasses of dict / list, which protocol 2+ sends as SETITEMS / APPENDS instead.
        const [, base, state] = args;
        const builtin = base instanceof PyGlobal && base.module === 'builtins' ? base.name : '';
        if (builtin === 'dict' && isDict(state)) {
          const entries = this.mergeDicts(state, null);
          return new PyObject(cls.module, cls.name, [], undefined, [], entries);
        }
        if (builtin === 'list' && Array.isArray(state)) {
          return new PyObject(cls.module, cls.name, [], undefined, state.slice());
        }
        args = state === undefined || state === null ? [] : [state];
      } else if (name === '__newobj__') {
        args = args.slice(1);
      } else if (name === '__newobj_ex__') {
        const [, posArgs, kwargs] = args;
        if (!Array.isArray(posArgs) || !isDict(kwargs)) break;
        args = withKwargs(posArgs, kwargs);
      } else {
        break;
      }
      module = cls.module;
      name = cls.name;
    }
    const special = this.special(module, name, args);
    if (special !== undefined) return special;
    // A fast-properties dict for the dict items: PyObject's default, Object.create(null), is a slow-mode object.
    return new PyObject(module, name, args, undefined, [], newDict());
  }

  private special(module: string, name: string, args: PyValue[]): PyValue | undefined {
    const [a0, a1] = args;
    switch (module) {
      case 'builtins':
        switch (name) {
          case 'getattr':
            // How classmethods pickle, e.g. getattr(zoneinfo.ZoneInfo, '_unpickle').
            return a0 instanceof PyGlobal && typeof a1 === 'string' && args.length === 2
              ? new PyGlobal(a0.module, `${a0.name}.${a1}`)
              : undefined;
          case 'set':
          case 'frozenset': {
            if (args.length === 0) return [];
            if (args.length !== 1 || !Array.isArray(a0)) return undefined;
            return a0.slice();
          }
          case 'bytes':
          case 'bytearray':
            if (args.length === 0) return new Uint8Array(0);
            if (args.length === 1 && a0 instanceof Uint8Array) return a0.slice();
            return args.length === 2 ? this.encode(a0, a1) : undefined;
        }
        return undefined;
      case '_codecs':
        return name === 'encode' && (args.length === 1 || args.length === 2)
          ? this.encode(a0, args.length === 1 ? 'utf-8' : a1)
          : undefined;
      case 'collections':
        if (name !== 'OrderedDict' || args.length > 1) return undefined;
        return this.orderedDict(a0);
      case 'datetime':
        if (name === 'datetime') return this.dateTime(args);
        if (name === 'timedelta') return timedeltaOf(args);
        if (name === 'timezone') {
          if (!(a0 instanceof PyTimedelta) || args.length > 2) return undefined;
          return new PyTimezone(a0.totalSeconds(), undefined);
        }
        return undefined;
      case 'zoneinfo':
      case 'backports.zoneinfo':
        if (name !== 'ZoneInfo._unpickle' && name !== 'ZoneInfo' && name !== 'ZoneInfo.no_cache')
          return undefined;
        return typeof a0 === 'string' ? new PyTimezone(undefined, a0) : undefined;
      case 'pytz':
        return pytzZone(name, args);
    }
    return undefined;
  }

  /** `_codecs.encode(text, encoding)`: how protocols < 3 carry bytes (as the latin-1 text of the bytes). */
  private encode(text: PyValue | undefined, encoding: PyValue | undefined): Uint8Array | undefined {
    if (typeof text !== 'string' || typeof encoding !== 'string') return undefined;
    const enc = encoding.toLowerCase().replace(/_/g, '-');
    if (enc === 'latin1' || enc === 'latin-1' || enc === 'iso-8859-1' || enc === 'l1') {
      const out = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) {
        const code = text.charCodeAt(i);
        if (code > 0xff) throw this.fail('bad_value', "character out of range for 'latin1'");
        out[i] = code;
      }
      return out;
    }
    if (enc === 'utf-8' || enc === 'utf8') return utf8Encoder.encode(text);
    return undefined;
  }

  private orderedDict(pairs: PyValue | undefined): PyDict | undefined {
    const dict = newDict();
    if (pairs === undefined) return dict;
    if (!Array.isArray(pairs)) return undefined;
    for (const pair of pairs) {
      if (!Array.isArray(pair) || pair.length !== 2) return undefined;
      this.setItem(dict, pair[0]!, pair[1]!);
    }
    return dict;
  }

  /** `datetime.datetime(state[, tzinfo])` as pickled, or the plain `datetime(y, m, d, ...[, tzinfo])` form. */
  private dateTime(args: PyValue[]): PyValue | undefined {
    const [state, tzArg] = args;
    if (state instanceof Uint8Array || typeof state === 'string') {
      if (args.length > 2 || state.length !== 10) return undefined;
      const tz = tzOf(tzArg);
      if (tz === false) return undefined;
      const byte = (i: number): number => {
        const value = typeof state === 'string' ? state.charCodeAt(i) : state[i]!;
        if (value > 0xff) throw this.fail('bad_value', 'datetime state is not latin-1');
        return value;
      };
      // Byte 2 carries PEP 495's fold flag in its top bit; PyDateTime has no fold, the offset/zone decides.
      return this.validDateTime(
        byte(0) * 256 + byte(1),
        byte(2) & 0x7f,
        byte(3),
        byte(4),
        byte(5),
        byte(6),
        (byte(7) << 16) | (byte(8) << 8) | byte(9),
        tz,
      );
    }
    if (args.length < 3 || args.length > 8) return undefined;
    const fields = args.slice(0, 7);
    if (!fields.every((f) => typeof f === 'number' && Number.isInteger(f))) return undefined;
    const tz = tzOf(args[7]);
    if (tz === false) return undefined;
    const [year, month, day, hour = 0, minute = 0, second = 0, microsecond = 0] = fields as number[];
    return this.validDateTime(year!, month!, day!, hour, minute, second, microsecond, tz);
  }

  private validDateTime(
    year: number,
    month: number,
    day: number,
    hour: number,
    minute: number,
    second: number,
    microsecond: number,
    tz: PyTimezone | undefined,
  ): PyDateTime {
    const ok =
      year >= 1 &&
      year <= 9999 &&
      month >= 1 &&
      month <= 12 &&
      day >= 1 &&
      day <= daysInMonth(year, month) &&
      hour >= 0 &&
      hour < 24 &&
      minute >= 0 &&
      minute < 60 &&
      second >= 0 &&
      second < 60 &&
      microsecond >= 0 &&
      microsecond < 1_000_000;
    if (!ok) throw this.fail('bad_value', 'datetime field out of range');
    return new PyDateTime(year, month, day, hour, minute, second, microsecond, tz);
  }

  private build(target: PyValue, state: PyValue): void {
    // Only PyObjects keep state; BUILD on a dict/list subclass or a datetime carries instance attributes that
    // have no place in the plain value.
    if (!(target instanceof PyObject)) return;
    let next = state;
    if (Array.isArray(state) && state.length === 2) {
      // (instance __dict__, __slots__ values), either may be None: one merged attribute dict.
      const dict = attributeDict(state[0]);
      const slots = attributeDict(state[1]);
      if (dict !== undefined && slots !== undefined && (dict !== null || slots !== null)) {
        next = this.mergeDicts(dict, slots);
      }
    }
    const previous = target.state;
    target.state = isDict(previous) && isDict(next) ? this.mergeDicts(previous, next) : next;
  }

  private mergeDicts(a: PyDict | null, b: PyDict | null): PyDict {
    const out = newDict();
    for (const source of [a, b]) {
      if (source === null) continue;
      for (const key in source) out[key] = source[key]!;
    }
    return out;
  }
}

const EMPTY_BYTES = new Uint8Array(0);
const reusableMachine = new Machine();

const SIMPLE_ESCAPES: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, {
  '\\': '\\',
  "'": "'",
  '"': '"',
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
});

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  return -1;
}

function latin1Of(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, Math.min(i + 4096, bytes.length)));
  }
  return out;
}

/** A dict, None (null), or undefined for anything else: the halves of a `(__dict__, slots)` state. */
function attributeDict(value: PyValue | undefined): PyDict | null | undefined {
  if (value === null) return null;
  return isDict(value) ? value : undefined;
}

function withKwargs(args: PyValue[], kwargs: PyDict): PyValue[] {
  // PyObject has no keyword-argument slot: non-empty kwargs ride along as a final dict argument.
  return Object.keys(kwargs).length > 0 ? [...args, kwargs] : args;
}

/** The tzinfo argument of a datetime: undefined for naive, false when it is not a tz we understand. */
function tzOf(value: PyValue | undefined): PyTimezone | undefined | false {
  if (value === undefined || value === null) return undefined;
  return value instanceof PyTimezone ? value : false;
}

function timedeltaOf(args: PyValue[]): PyTimedelta | undefined {
  if (args.length > 3) return undefined;
  const [days = 0, seconds = 0, microseconds = 0] = args;
  if (typeof days !== 'number' || typeof seconds !== 'number' || typeof microseconds !== 'number') {
    return undefined;
  }
  return new PyTimedelta(days, seconds, microseconds);
}

/**
 * pytz pickles its zones through small factories (pytz/__init__.py, tzinfo.py `__reduce__`):
 * `_p(zone, utcoffset_s, dst_s, tzname)` for a localized DST zone, `_p(zone)` for a static one,
 * `_UTC()` and `FixedOffset(minutes)`. The localized form carries the exact offset in force.
 */
function pytzZone(name: string, args: PyValue[]): PyTimezone | undefined {
  const [a0, a1] = args;
  switch (name) {
    case '_p':
      if (typeof a0 !== 'string') return undefined;
      if (typeof a1 === 'number') return new PyTimezone(a1, undefined);
      return args.length === 1 ? new PyTimezone(undefined, a0) : undefined;
    case '_UTC':
    case 'UTC':
      return args.length === 0 ? new PyTimezone(0, undefined) : undefined;
    case 'FixedOffset':
      return typeof a0 === 'number' ? new PyTimezone(a0 * 60, undefined) : undefined;
  }
  return undefined;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

function childrenOf(container: PyValue[] | PyDict | PyObject): PyValue[] {
  if (Array.isArray(container)) return container;
  if (!(container instanceof PyObject)) return Object.values(container);
  const out = container.args.slice();
  if (container.state !== undefined) out.push(container.state);
  for (const item of container.listItems) out.push(item);
  for (const key in container.dictItems) out.push(container.dictItems[key]!);
  return out;
}

const IN_PROGRESS = -1;

/**
 * Rejects values nested deeper than `maxDepth` or containing themselves, walking the finished value once
 * with an explicit stack. Heights are memoized so shared sub-values (memo GETs) are visited once.
 */
function checkDepth(root: PyValue, maxDepth: number, offset: number): void {
  if (!isContainer(root)) return;
  const tooDeep = (why: string): UnpickleError =>
    new UnpickleError('too_deep', `${why} (max depth ${maxDepth})`, offset);
  if (maxDepth < 1) throw tooDeep('value nested too deeply');
  const heights = new Map<object, number>();
  const path: object[] = [root];
  const kids: PyValue[][] = [childrenOf(root)];
  const next: number[] = [0];
  const best: number[] = [1];
  heights.set(root, IN_PROGRESS);
  while (path.length > 0) {
    const top = path.length - 1;
    const children = kids[top]!;
    let i = next[top]!;
    let descended = false;
    while (i < children.length) {
      const child = children[i++]!;
      if (!isContainer(child)) continue;
      const known = heights.get(child);
      if (known === IN_PROGRESS) throw tooDeep('value contains itself');
      if (known !== undefined) {
        if (top + 1 + known > maxDepth) throw tooDeep('value nested too deeply');
        if (known + 1 > best[top]!) best[top] = known + 1;
        continue;
      }
      if (path.length >= maxDepth) throw tooDeep('value nested too deeply');
      next[top] = i;
      heights.set(child, IN_PROGRESS);
      path.push(child);
      kids.push(childrenOf(child));
      next.push(0);
      best.push(1);
      descended = true;
      break;
    }
    if (descended) continue;
    const height = best[top]!;
    heights.set(path[top]!, height);
    path.pop();
    kids.pop();
    next.pop();
    best.pop();
    if (top > 0 && height + 1 > best[top - 1]!) best[top - 1] = height + 1;
  }
}
