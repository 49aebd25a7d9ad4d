// One-pass OTLP/protobuf encoder of an ExportTraceServiceRequest: byte for byte what otlp-transformer's
// ProtobufTraceSerializer writes for the same ReadableSpan[], plus a fast path for spans that hand over their
// own attributes (SectionSpan), so that no Attributes object is built for them.
import type { Attributes, HrTime, Link } from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';

/** Receives a span's attributes one at a time, in the order the span's `attributes` object holds them. */
export interface AttributeSink {
  string(key: string, value: string): void;
  /** Integers in the int64 range become `int_value`, everything else `double_value`, as the SDK chooses. */
  number(key: string, value: number): void;
  boolean(key: string, value: boolean): void;
}

/** The method a span implements to write its attributes straight to the encoder. */
export const WRITE_ATTRIBUTES: unique symbol = Symbol('otlp-encoder.writeAttributes');

/**
 * A ReadableSpan that writes its attributes without building them: `[WRITE_ATTRIBUTES](sink)` must make the
 * same calls, in the same order, as iterating its `attributes` object would (so no array-index keys).
 */
export interface DirectAttributes {
  [WRITE_ATTRIBUTES](sink: AttributeSink): void;
}

/**
 * InstrumentationScope as the serializer reads it: core 2.x's type has no attributes, but the serializer
 * writes them when a scope object carries them, so the encoder must too to stay byte-identical.
 */
interface ScopeWithAttributes extends InstrumentationScope {
  readonly attributes?: Attributes;
  readonly droppedAttributesCount?: number;
}

/** The scratch buffer starts at this size and is kept between requests up to MAX_KEPT_SCRATCH_BYTES. */
const INITIAL_SCRATCH_BYTES = 64 * 1024;
const MAX_KEPT_SCRATCH_BYTES = 8 * 1024 * 1024;
/** Distinct attribute keys whose encoded `KeyValue.key` field is kept; others are encoded each time. */
export const MAX_CACHED_KEYS = 1024;

// Bytes reserved for a nested message's length before its size is known; a different final size shifts the
// body once. Spans are 128 B..16 KiB, ScopeSpans / ResourceSpans of a 512-span batch 16 KiB..2 MiB.
const RESERVE_SMALL = 1;
const RESERVE_SPAN = 2;
const RESERVE_GROUP = 3;

// Field tags: (field number << 3) | wire type.
const TAG_RESOURCE_SPANS = 0x0a; // ExportTraceServiceRequest.resource_spans = 1
const TAG_RESOURCE = 0x0a; // ResourceSpans.resource = 1
const TAG_SCOPE_SPANS = 0x12; // ResourceSpans.scope_spans = 2
const TAG_SCHEMA_URL = 0x1a; // ResourceSpans / ScopeSpans .schema_url = 3
const TAG_SCOPE = 0x0a; // ScopeSpans.scope = 1
const TAG_SPAN = 0x12; // ScopeSpans.spans = 2
const TAG_SPAN_ATTRIBUTE = 0x4a; // Span.attributes = 9
const TAG_KEY = 0x0a; // KeyValue.key = 1
const TAG_VALUE = 0x12; // KeyValue.value = 2

const MIN_INT64 = -(2 ** 63);
const MAX_INT64_EXCLUSIVE = 2 ** 63;
const TWO_POW_32 = 0x100000000;

// OTLP Span.flags: the W3C trace flags in the low byte, plus "is_remote is known" and "is remote".
const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK = 0x100;
const SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK = 0x200;

function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
  return (
    (traceFlags & 0xff) |
    SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK |
    (isRemote ? SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK : 0)
  );
}

function varintSize(value: number): number {
  let size = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 0x80)) size += 1;
  return size;
}

/** otlp-transformer's hexToBinary digit value, including what it makes of a non-hex character. */
function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 102) return code - 87;
  return code - 55;
}

/** hexDigit of every ASCII code, as a byte (what a Uint8Array store would keep of it). */
const HEX_DIGITS = Uint8Array.from({ length: 0x80 }, (_, code) => hexDigit(code));

const keyCache = new Map<string, Uint8Array>();

/** `KeyValue.key` as a whole field (tag, length, UTF-8), encoded once per distinct key. */
function keyField(key: string): Uint8Array {
  const cached = keyCache.get(key);
  if (cached !== undefined) return cached;
  const utf8 = Buffer.from(key, 'utf8');
  const field = new Uint8Array(1 + varintSize(utf8.length) + utf8.length);
  let at = 0;
  field[at++] = TAG_KEY;
  let n = utf8.length;
  while (n >= 0x80) {
    field[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  field[at++] = n;
  field.set(utf8, at);
  if (keyCache.size < MAX_CACHED_KEYS) keyCache.set(key, field);
  return field;
}

let scratch: Buffer | undefined;
let scratchInUse = false;

/** Protobuf wire writer over a growable Buffer; also the AttributeSink for one span's attributes. */
class ProtoWriter implements AttributeSink {
  pos = 0;
  private lastTraceId: string | undefined = undefined;
  private lastTraceIdField: Uint8Array = new Uint8Array(0);

  constructor(public buf: Buffer) {}

  ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.grow(n);
  }

  private grow(n: number): void {
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  /** One byte; the caller has ensured room for it. */
  byte(value: number): void {
    this.buf[this.pos++] = value;
  }

  /** otlp-transformer's writeVarint: 32-bit values directly, others as 64-bit two's complement. */
  varint(value: number): void {
    this.ensure(10);
    const buf = this.buf;
    let pos = this.pos;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 0x7f) {
        buf[pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      buf[pos++] = v;
    } else {
      let low: number;
      let high: number;
      if (value >= 0) {
        low = value >>> 0;
        high = (value / TWO_POW_32) >>> 0;
      } else {
        const abs = Math.abs(value);
        low = ~(abs >>> 0) >>> 0;
        high = ~((abs / TWO_POW_32) >>> 0) >>> 0;
        low = (low + 1) >>> 0;
        if (low === 0) high = (high + 1) >>> 0;
      }
      while (high > 0 || low > 0x7f) {
        buf[pos++] = (low & 0x7f) | 0x80;
        low = ((low >>> 7) | (high << 25)) >>> 0;
        high >>>= 7;
      }
      buf[pos++] = low & 0x7f;
    }
    this.pos = pos;
  }

  fixed32(value: number): void {
    this.ensure(4);
    const buf = this.buf;
    const v = value >>> 0;
    buf[this.pos++] = v & 0xff;
    buf[this.pos++] = (v >>> 8) & 0xff;
    buf[this.pos++] = (v >>> 16) & 0xff;
    buf[this.pos++] = (v >>> 24) & 0xff;
  }

  /**
   * HrTime as fixed64 nanoseconds, with otlp-transformer's arithmetic (seconds split at bit 16 so every
   * product stays an exact double), so even out-of-range times wrap the same way.
   */
  hrTime(time: HrTime): void {
    const seconds = time[0];
    const nanos = time[1];
    const fromLow16 = (seconds & 0xffff) * 1_000_000_000;
    const fromUpper = ((seconds / 0x10000) >>> 0) * 1_000_000_000;
    const low = (fromLow16 >>> 0) + (((fromUpper & 0xffff) * 0x10000) >>> 0) + nanos;
    const carry = Math.floor(low / TWO_POW_32);
    this.fixed32(low >>> 0);
    this.fixed32((Math.floor(fromLow16 / TWO_POW_32) + ((fromUpper / 0x10000) >>> 0) + carry) >>> 0);
  }

  double(value: number): void {
    this.ensure(8);
    this.pos = this.buf.writeDoubleLE(value, this.pos);
  }

  /** A length-delimited string: UTF-8, lone surrogates as U+FFFD (as TextEncoder does, and Buffer too). */
  utf8(value: string): void {
    const n = value.length;
    if (n < 0x80) {
      this.ensure(n + 1);
      const buf = this.buf;
      let pos = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) break;
        buf[pos++] = code;
      }
      if (i === n) {
        buf[this.pos] = n;
        this.pos = pos;
        return;
      }
    }
    const bytes = Buffer.byteLength(value, 'utf8');
    this.varint(bytes);
    this.ensure(bytes);
    this.pos += this.buf.write(value, this.pos, bytes, 'utf8');
  }

  /** A length-delimited `bytes` field from hex, read as otlp-transformer's hexToBinary does. */
  hex(value: string): void {
    const n = value.length >>> 1;
    this.varint(n);
    this.ensure(n);
    const buf = this.buf;
    let pos = this.pos;
    for (let i = 0; i < 2 * n; i += 2) {
      const high = value.charCodeAt(i);
      const low = value.charCodeAt(i + 1);
      buf[pos++] =
        (high | low) < 0x80
          ? ((HEX_DIGITS[high] ?? 0) << 4) | (HEX_DIGITS[low] ?? 0)
          : (hexDigit(high) << 4) | hexDigit(low);
    }
    this.pos = pos;
  }

  /** `hex(traceId)`, remembering the last one: every span of a job run has the same trace id. */
  traceId(value: string): void {
    if (value !== this.lastTraceId) {
      const start = this.pos;
      this.hex(value);
      this.lastTraceId = value;
      // A copy: the bytes just written move when an enclosing message's length is fixed up.
      this.lastTraceIdField = new Uint8Array(this.buf.subarray(start, this.pos));
      return;
    }
    this.rawBytes(this.lastTraceIdField);
  }

  rawBytes(bytes: Uint8Array): void {
    const n = bytes.length;
    this.ensure(n);
    const buf = this.buf;
    let pos = this.pos;
    if (n <= 64) {
      for (let i = 0; i < n; i++) buf[pos++] = bytes[i] ?? 0;
    } else {
      buf.set(bytes, pos);
      pos += n;
    }
    this.pos = pos;
  }

  /** Writes `tag` and reserves `reserved` bytes for the length; returns where the length goes. */
  begin(tag: number, reserved: number): number {
    this.ensure(1 + reserved);
    this.buf[this.pos++] = tag;
    const at = this.pos;
    this.pos += reserved;
    return at;
  }

  /** Writes the length of the message begun at `at`; moves its body if the length is not `reserved` bytes. */
  end(at: number, reserved: number): void {
    const length = this.pos - at - reserved;
    if (length < 0x80 && reserved === 1) {
      this.buf[at] = length;
      return;
    }
    const size = varintSize(length);
    if (size !== reserved) {
      if (size > reserved) this.ensure(size - reserved);
      this.buf.copyWithin(at + size, at + reserved, this.pos);
      this.pos += size - reserved;
    }
    let v = length;
    let pos = at;
    while (v >= 0x80) {
      this.buf[pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[pos] = v;
  }

  // ---- AttributeSink: one Span.attributes entry per call -------------------------------------------------

  string(key: string, value: string): void {
    const field = keyField(key);
    const keyLength = field.length;
    const n = value.length;
    // KeyValue = key field, 0x12, AnyValue length, AnyValue (0x0a, n, bytes): every length one byte when the
    // whole entry is under 128 bytes and the value is ASCII, the common case, written without fix-ups.
    const kvLength = keyLength + 4 + n;
    if (kvLength < 0x80) {
      this.ensure(kvLength + 2);
      const buf = this.buf;
      let pos = this.pos + 2;
      for (let i = 0; i < keyLength; i++) buf[pos++] = field[i] ?? 0;
      buf[pos++] = TAG_VALUE;
      buf[pos++] = n + 2;
      buf[pos++] = 0x0a;
      buf[pos++] = n;
      let i = 0;
      for (; i < n; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) break;
        buf[pos++] = code;
      }
      if (i === n) {
        buf[this.pos] = TAG_SPAN_ATTRIBUTE;
        buf[this.pos + 1] = kvLength;
        this.pos = pos;
        return;
      }
    }
    const kv = this.begin(TAG_SPAN_ATTRIBUTE, RESERVE_SMALL);
    this.rawBytes(field);
    const av = this.begin(TAG_VALUE, RESERVE_SMALL);
    this.ensure(1);
    this.byte(0x0a);
    this.utf8(value);
    this.end(av, RESERVE_SMALL);
    this.end(kv, RESERVE_SMALL);
  }

  number(key: string, value: number): void {
    const kv = this.begin(TAG_SPAN_ATTRIBUTE, RESERVE_SMALL);
    this.rawBytes(keyField(key));
    const av = this.begin(TAG_VALUE, RESERVE_SMALL);
    writeNumber(this, value);
    this.end(av, RESERVE_SMALL);
    this.end(kv, RESERVE_SMALL);
  }

  boolean(key: string, value: boolean): void {
    const kv = this.begin(TAG_SPAN_ATTRIBUTE, RESERVE_SMALL);
    this.rawBytes(keyField(key));
    const av = this.begin(TAG_VALUE, RESERVE_SMALL);
    this.ensure(2);
    this.byte(0x10);
    this.byte(value ? 1 : 0);
    this.end(av, RESERVE_SMALL);
    this.end(kv, RESERVE_SMALL);
  }
}

/** AnyValue int_value (field 3) or double_value (field 4), chosen as the serializer does. */
function writeNumber(w: ProtoWriter, value: number): void {
  // Not Number.isSafeInteger: integers past 2^53 that doubles hold exactly still fit an int64.
  if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64_EXCLUSIVE) {
    w.ensure(1);
    w.byte(0x18);
    w.varint(value);
  } else {
    w.ensure(1);
    w.byte(0x21);
    w.double(value);
  }
}

/** The body of an AnyValue for any attribute value the serializer accepts (nothing for unsupported ones). */
function writeAnyValue(w: ProtoWriter, value: unknown): void {
  if (typeof value === 'string') {
    w.ensure(1);
    w.byte(0x0a);
    w.utf8(value);
  } else if (typeof value === 'boolean') {
    w.ensure(2);
    w.byte(0x10);
    w.byte(value ? 1 : 0);
  } else if (typeof value === 'number') {
    writeNumber(w, value);
  } else if (value instanceof Uint8Array) {
    w.ensure(1);
    w.byte(0x3a); // bytes_value = 7
    w.varint(value.length);
    w.rawBytes(value);
  } else if (Array.isArray(value)) {
    const array = w.begin(0x2a, RESERVE_SMALL); // array_value = 5
    for (const item of value as unknown[]) {
      const entry = w.begin(0x0a, RESERVE_SMALL); // ArrayValue.values = 1
      writeAnyValue(w, item);
      w.end(entry, RESERVE_SMALL);
    }
    w.end(array, RESERVE_SMALL);
  } else if (typeof value === 'object' && value !== null) {
    const list = w.begin(0x32, RESERVE_SMALL); // kvlist_value = 6
    const record = value as Record<string, unknown>;
    for (const key in record) {
      if (!Object.prototype.hasOwnProperty.call(record, key)) continue;
      const kv = w.begin(0x0a, RESERVE_SMALL); // KeyValueList.values = 1
      w.ensure(1);
      w.byte(TAG_KEY);
      w.utf8(key);
      const av = w.begin(TAG_VALUE, RESERVE_SMALL);
      writeAnyValue(w, record[key]);
      w.end(av, RESERVE_SMALL);
      w.end(kv, RESERVE_SMALL);
    }
    w.end(list, RESERVE_SMALL);
  }
}

/** Repeated KeyValue under `tag`, in for-in order over own properties (as the serializer iterates). */
function writeAttributes(w: ProtoWriter, attributes: Attributes, tag: number): void {
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
    const kv = w.begin(tag, RESERVE_SMALL);
    w.rawBytes(keyField(key));
    const av = w.begin(TAG_VALUE, RESERVE_SMALL);
    writeAnyValue(w, attributes[key]);
    w.end(av, RESERVE_SMALL);
    w.end(kv, RESERVE_SMALL);
  }
}

function hasDirectAttributes(span: ReadableSpan): span is ReadableSpan & DirectAttributes {
  return typeof (span as Partial<DirectAttributes>)[WRITE_ATTRIBUTES] === 'function';
}

// Span.Event: 1 time_unix_nano, 2 name, 3 attributes, 4 dropped_attributes_count.
function writeEvent(w: ProtoWriter, event: TimedEvent): void {
  const at = w.begin(0x5a, RESERVE_SMALL); // Span.events = 11
  w.ensure(1);
  w.byte(0x09);
  w.hrTime(event.time);
  w.ensure(1);
  w.byte(0x12);
  w.utf8(event.name);
  if (event.attributes) writeAttributes(w, event.attributes, 0x1a);
  w.ensure(1);
  w.byte(0x20);
  w.varint(event.droppedAttributesCount || 0);
  w.end(at, RESERVE_SMALL);
}

// Span.Link: 1 trace_id, 2 span_id, 3 trace_state, 4 attributes, 5 dropped_attributes_count, 6 flags.
function writeLink(w: ProtoWriter, link: Link): void {
  const at = w.begin(0x6a, RESERVE_SMALL); // Span.links = 13
  const context = link.context;
  w.ensure(1);
  w.byte(0x0a);
  w.hex(context.traceId);
  w.ensure(1);
  w.byte(0x12);
  w.hex(context.spanId);
  const traceState = context.traceState?.serialize();
  if (traceState) {
    w.ensure(1);
    w.byte(0x1a);
    w.utf8(traceState);
  }
  if (link.attributes) writeAttributes(w, link.attributes, 0x22);
  w.ensure(1);
  w.byte(0x28);
  w.varint(link.droppedAttributesCount || 0);
  w.ensure(1);
  w.byte(0x35);
  w.fixed32(spanFlags(context.traceFlags, context.isRemote));
  w.end(at, RESERVE_SMALL);
}

// Span: 1 trace_id, 2 span_id, 3 trace_state, 4 parent_span_id, 5 name, 6 kind, 7 start_time_unix_nano,
// 8 end_time_unix_nano, 9 attributes, 10 dropped_attributes_count, 11 events, 12 dropped_events_count,
// 13 links, 14 dropped_links_count, 15 status, 16 flags.
function writeSpan(w: ProtoWriter, span: ReadableSpan): void {
  const at = w.begin(TAG_SPAN, RESERVE_SPAN);
  const context = span.spanContext();
  w.ensure(1);
  w.byte(0x0a);
  w.traceId(context.traceId);
  w.ensure(1);
  w.byte(0x12);
  w.hex(context.spanId);
  const traceState = context.traceState?.serialize();
  if (traceState) {
    w.ensure(1);
    w.byte(0x1a);
    w.utf8(traceState);
  }
  const parent = span.parentSpanContext;
  if (parent?.spanId) {
    w.ensure(1);
    w.byte(0x22);
    w.hex(parent.spanId);
  }
  w.ensure(1);
  w.byte(0x2a);
  w.utf8(span.name);
  // The API's SpanKind has no "unspecified": OTLP's is the API's plus one.
  const kind = span.kind == null ? 0 : span.kind + 1;
  if (kind !== 0) {
    w.ensure(1);
    w.byte(0x30);
    w.varint(kind);
  }
  w.ensure(1);
  w.byte(0x39);
  w.hrTime(span.startTime);
  w.ensure(1);
  w.byte(0x41);
  w.hrTime(span.endTime);
  if (hasDirectAttributes(span)) span[WRITE_ATTRIBUTES](w);
  else if (span.attributes) writeAttributes(w, span.attributes, TAG_SPAN_ATTRIBUTE);
  w.ensure(1);
  w.byte(0x50);
  w.varint(span.droppedAttributesCount);
  for (const event of span.events) writeEvent(w, event);
  w.ensure(1);
  w.byte(0x60);
  w.varint(span.droppedEventsCount);
  for (const link of span.links) writeLink(w, link);
  w.ensure(1);
  w.byte(0x70);
  w.varint(span.droppedLinksCount);
  // Status: 2 message (skipped when empty), 3 code (always written).
  const status = w.begin(0x7a, RESERVE_SMALL);
  if (span.status.message) {
    w.ensure(1);
    w.byte(0x12);
    w.utf8(span.status.message);
  }
  w.ensure(1);
  w.byte(0x18);
  w.varint(span.status.code);
  w.end(status, RESERVE_SMALL);
  // flags is field 16, fixed32: its tag takes two bytes.
  w.ensure(2);
  w.byte(0x85);
  w.byte(0x01);
  w.fixed32(spanFlags(context.traceFlags, parent?.isRemote));
  w.end(at, RESERVE_SPAN);
}

// InstrumentationScope: 1 name, 2 version, 3 attributes, 4 dropped_attributes_count.
function writeScope(w: ProtoWriter, scope: ScopeWithAttributes): void {
  const at = w.begin(TAG_SCOPE, RESERVE_SMALL);
  w.ensure(1);
  w.byte(0x0a);
  w.utf8(scope.name);
  if (scope.version) {
    w.ensure(1);
    w.byte(0x12);
    w.utf8(scope.version);
  }
  if (scope.attributes) writeAttributes(w, scope.attributes, 0x1a);
  if (scope.droppedAttributesCount) {
    w.ensure(1);
    w.byte(0x20);
    w.varint(scope.droppedAttributesCount);
  }
  w.end(at, RESERVE_SMALL);
}

// Resource: 1 attributes, 2 dropped_attributes_count (always 0: the SDK does not count them).
function writeResource(w: ProtoWriter, resource: Resource): void {
  const at = w.begin(TAG_RESOURCE, RESERVE_SPAN);
  if (resource.attributes) writeAttributes(w, resource.attributes, 0x0a);
  w.ensure(2);
  w.byte(0x10);
  w.byte(0);
  w.end(at, RESERVE_SPAN);
}

function writeSchemaUrl(w: ProtoWriter, schemaUrl: string | undefined): void {
  if (!schemaUrl) return;
  w.ensure(1);
  w.byte(TAG_SCHEMA_URL);
  w.utf8(schemaUrl);
}

/** Spans grouped by resource object, then scope object, in first-seen order (as the serializer does). */
function groupSpans(
  spans: readonly ReadableSpan[],
): Map<Resource, Map<InstrumentationScope, ReadableSpan[]>> {
  const byResource = new Map<Resource, Map<InstrumentationScope, ReadableSpan[]>>();
  let lastResource: Resource | undefined;
  let lastScope: InstrumentationScope | undefined;
  let lastList: ReadableSpan[] | undefined;
  for (const span of spans) {
    // Consecutive spans almost always share both (one resource per job run, one scope).
    if (span.resource === lastResource && span.instrumentationScope === lastScope && lastList !== undefined) {
      lastList.push(span);
      continue;
    }
    let scopes = byResource.get(span.resource);
    if (scopes === undefined) {
      scopes = new Map();
      byResource.set(span.resource, scopes);
    }
    let list = scopes.get(span.instrumentationScope);
    if (list === undefined) {
      list = [];
      scopes.set(span.instrumentationScope, list);
    }
    list.push(span);
    lastResource = span.resource;
    lastScope = span.instrumentationScope;
    lastList = list;
  }
  return byResource;
}

function writeRequest(w: ProtoWriter, spans: readonly ReadableSpan[]): void {
  for (const [resource, scopes] of groupSpans(spans)) {
    const resourceSpans = w.begin(TAG_RESOURCE_SPANS, RESERVE_GROUP);
    writeResource(w, resource);
    for (const [scope, list] of scopes) {
      const scopeSpans = w.begin(TAG_SCOPE_SPANS, RESERVE_GROUP);
      writeScope(w, scope);
      for (const span of list) writeSpan(w, span);
      writeSchemaUrl(w, scope.schemaUrl);
      w.end(scopeSpans, RESERVE_GROUP);
    }
    writeSchemaUrl(w, resource.schemaUrl);
    w.end(resourceSpans, RESERVE_GROUP);
  }
}

/**
 * The ExportTraceServiceRequest for `spans` as protobuf bytes (a fresh copy the caller owns), identical to
 * `ProtobufTraceSerializer.serializeRequest(spans)`.
 */
export function encodeTraceRequest(spans: readonly ReadableSpan[]): Uint8Array {
  // A span's getters could, in principle, encode another request while this one is half written.
  const shared = !scratchInUse;
  const writer = new ProtoWriter(
    shared
      ? (scratch ??= Buffer.allocUnsafe(INITIAL_SCRATCH_BYTES))
      : Buffer.allocUnsafe(INITIAL_SCRATCH_BYTES),
  );
  if (shared) scratchInUse = true;
  try {
    writeRequest(writer, spans);
    const out = new Uint8Array(writer.pos);
    out.set(writer.buf.subarray(0, writer.pos));
    return out;
  } finally {
    if (shared) {
      scratchInUse = false;
      if (writer.buf.length <= MAX_KEPT_SCRATCH_BYTES) scratch = writer.buf;
    }
  }
}
