// Plain-data stand-ins for the Python objects a pyATS reporter pickles. The unpickler produces them and
// the pickle writer (subscribe request, demo) consumes them; nothing here ever runs Python code.

/**
 * What an unpickled value can be. Python dicts become null-prototype records (keys stringified), lists
 * and tuples become arrays, sets become arrays, `bytes`/`bytearray` become Uint8Array, ints beyond
 * 2^53 become bigint.
 */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyDict
  | PyDateTime
  | PyTimedelta
  | PyTimezone
  | PyGlobal
  | PyObject;

export interface PyDict {
  [key: string]: PyValue;
}

/** `datetime.timedelta(days, seconds, microseconds)`. */
export class PyTimedelta {
  constructor(
    readonly days: number,
    readonly seconds: number,
    readonly microseconds: number,
  ) {}

  totalSeconds(): number {
    return this.days * 86400 + this.seconds + this.microseconds / 1e6;
  }
}

/**
 * A tzinfo. `offsetSeconds` is known for `datetime.timezone` and pytz's fixed-offset pickles; `name` is an
 * IANA zone for `zoneinfo.ZoneInfo` (resolved with Intl by the normalizer).
 */
export class PyTimezone {
  constructor(
    readonly offsetSeconds: number | undefined,
    readonly name: string | undefined,
  ) {}
}

/** `datetime.datetime`; `tz` undefined means naive (the job machine's local time). */
export class PyDateTime {
  constructor(
    readonly year: number,
    readonly month: number,
    readonly day: number,
    readonly hour: number,
    readonly minute: number,
    readonly second: number,
    readonly microsecond: number,
    readonly tz?: PyTimezone,
  ) {}

  /** Milliseconds since the epoch if this wall-clock time were UTC (offset not applied). */
  wallClockAsUtcMs(): number {
    return (
      Date.UTC(this.year, this.month - 1, this.day, this.hour, this.minute, this.second) +
      this.microsecond / 1000
    );
  }
}

/** A bare reference to a module-level name (pickle GLOBAL / STACK_GLOBAL) that was never called. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}

/**
 * An instance of any other class, never constructed: the class name, the arguments it would have been
 * built with, and the state `__setstate__` would have received (usually the instance `__dict__`).
 */
export class PyObject {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly args: PyValue[] = [],
    public state: PyValue | undefined = undefined,
    readonly listItems: PyValue[] = [],
    readonly dictItems: PyDict = Object.create(null) as PyDict,
  ) {}
}

export function isPyDict(value: unknown): value is PyDict {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    (Object.getPrototypeOf(value) === null || Object.getPrototypeOf(value) === Object.prototype)
  );
}
