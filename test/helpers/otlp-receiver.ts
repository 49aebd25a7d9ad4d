// A real OTLP receiver for tests: HTTP (POST /v1/traces, protobuf or JSON, optionally gzip) and gRPC
// (TraceService/Export). Protobuf is decoded by hand from the wire format, by the field numbers of
// opentelemetry-proto, so tests check the bytes an exporter really sent, not a library's reading of them.
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';

export type AttributeValue = string | number | boolean;

/** A Span.Link: a span of another trace (or this one) that this span relates to. */
export interface DecodedLink {
  traceId: string;
  spanId: string;
  traceState: string;
  /** W3C trace flags in the low byte, bits 8-9 for "is_remote known" / "is remote"; 0 when not sent. */
  flags: number;
  attributes: Record<string, AttributeValue>;
}

/** A Span.Event: something that happened at a time in the span (here: a section's log excerpt). */
export interface DecodedEvent {
  timeUnixNano: bigint;
  name: string;
  attributes: Record<string, AttributeValue>;
}

export interface DecodedSpan {
  traceId: string;
  spanId: string;
  /** Hex; '' for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number;
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  attributes: Record<string, AttributeValue>;
  /** OTLP StatusCode: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  links: DecodedLink[];
  events: DecodedEvent[];
  resource: Record<string, AttributeValue>;
  /** Instrumentation scope name. */
  scope: string;
  scopeVersion: string;
}

/** A LogRecord as OTLP logs carry it (a section's log line, with its span's ids). */
export interface DecodedLogRecord {
  timeUnixNano: bigint;
  severityNumber: number;
  severityText: string;
  body: AttributeValue;
  attributes: Record<string, AttributeValue>;
  /** Hex; '' when the record names no trace. */
  traceId: string;
  spanId: string;
  resource: Record<string, AttributeValue>;
  scope: string;
}

export interface ReceivedRequest {
  contentType: string;
  contentEncoding: string;
  headers: IncomingHttpHeaders;
  status: number;
  spanCount: number;
}

export type StatusRule = number | ((req: IncomingMessage) => number);

export interface OtlpReceiver {
  /** Base URL, e.g. `http://127.0.0.1:PORT`; exporters post to `${url}/v1/traces`. */
  url: string;
  /** Spans of accepted (2xx) requests, in arrival order. */
  spans: DecodedSpan[];
  /** Log records of accepted requests to `/v1/logs`, in arrival order. */
  logs: DecodedLogRecord[];
  /** Number of export requests received so far (any status). */
  readonly requests: number;
  requestLog: ReceivedRequest[];
  waitForSpans(n: number, timeoutMs?: number): Promise<DecodedSpan[]>;
  waitForLogs(n: number, timeoutMs?: number): Promise<DecodedLogRecord[]>;
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  setStatus(status: StatusRule): void;
  close(): Promise<void>;
}

// ---- protobuf wire format --------------------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** Reads protobuf fields from a byte range; throws on anything malformed. */
export class WireReader {
  private pos: number;

  constructor(
    private readonly buf: Uint8Array,
    start = 0,
    private readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  tag(): { field: number; wire: number } {
    const key = this.varint();
    const field = Number(key >> 3n);
    if (field === 0) throw new Error(`field number 0 at offset ${this.pos}`);
    return { field, wire: Number(key & 7n) };
  }

  varint(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const byte = this.buf[this.pos++] ?? 0;
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
    }
    throw new Error('varint longer than 10 bytes');
  }

  fixed64(): bigint {
    const view = this.take(8);
    return new DataView(view.buffer, view.byteOffset, 8).getBigUint64(0, true);
  }

  double(): number {
    const view = this.take(8);
    return new DataView(view.buffer, view.byteOffset, 8).getFloat64(0, true);
  }

  fixed32(): number {
    const view = this.take(4);
    return new DataView(view.buffer, view.byteOffset, 4).getUint32(0, true);
  }

  /** A length-delimited field's bytes (a view, not a copy). */
  bytes(): Uint8Array {
    return this.take(Number(this.varint()));
  }

  string(): string {
    return Buffer.from(this.bytes()).toString('utf8');
  }

  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.varint();
    else if (wire === WIRE_FIXED64) this.take(8);
    else if (wire === WIRE_LEN) this.bytes();
    else if (wire === WIRE_FIXED32) this.take(4);
    else throw new Error(`unsupported wire type ${wire}`);
  }

  private take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.end) throw new Error(`field of ${n} bytes overruns the message`);
    const view = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return view;
  }
}

function expectWire(message: string, field: number, wire: number, expected: number): void {
  if (wire !== expected) throw new Error(`${message}.${field}: wire type ${wire}, expected ${expected}`);
}

/** Iterates the fields of a message, checking each known field's wire type; unknown fields are skipped. */
function readMessage(
  bytes: Uint8Array,
  message: string,
  wireTypes: Record<number, number>,
  onField: (field: number, reader: WireReader) => void,
): void {
  const reader = new WireReader(bytes);
  while (!reader.done) {
    const { field, wire } = reader.tag();
    const expected = wireTypes[field];
    if (expected === undefined) {
      reader.skip(wire);
      continue;
    }
    expectWire(message, field, wire, expected);
    onField(field, reader);
  }
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

// common.proto AnyValue: 1 string_value, 2 bool_value, 3 int_value (int64), 4 double_value,
// 5 array_value, 6 kvlist_value, 7 bytes_value.
function decodeAnyValue(bytes: Uint8Array): AttributeValue {
  let value: AttributeValue | undefined;
  readMessage(
    bytes,
    'AnyValue',
    { 1: WIRE_LEN, 2: WIRE_VARINT, 3: WIRE_VARINT, 4: WIRE_FIXED64, 5: WIRE_LEN, 6: WIRE_LEN, 7: WIRE_LEN },
    (field, r) => {
      if (field === 1) value = r.string();
      else if (field === 2) value = r.varint() !== 0n;
      else if (field === 3) value = Number(BigInt.asIntN(64, r.varint()));
      else if (field === 4) value = r.double();
      else throw new Error(`AnyValue.${field}: arrays, kvlists and bytes are not expected here`);
    },
  );
  if (value === undefined) throw new Error('empty AnyValue');
  return value;
}

// common.proto KeyValue: 1 key, 2 value (AnyValue).
function decodeKeyValue(bytes: Uint8Array, into: Record<string, AttributeValue>): void {
  let key: string | undefined;
  let value: AttributeValue | undefined;
  readMessage(bytes, 'KeyValue', { 1: WIRE_LEN, 2: WIRE_LEN }, (field, r) => {
    if (field === 1) key = r.string();
    else value = decodeAnyValue(r.bytes());
  });
  if (key === undefined || value === undefined) throw new Error('KeyValue without key or value');
  into[key] = value;
}

// resource.proto Resource: 1 attributes (repeated KeyValue), 2 dropped_attributes_count.
function decodeResource(bytes: Uint8Array): Record<string, AttributeValue> {
  const attributes: Record<string, AttributeValue> = {};
  readMessage(bytes, 'Resource', { 1: WIRE_LEN, 2: WIRE_VARINT }, (field, r) => {
    if (field === 1) decodeKeyValue(r.bytes(), attributes);
    else r.varint();
  });
  return attributes;
}

// trace.proto Status: 2 message, 3 code (1 is reserved).
function decodeStatus(bytes: Uint8Array): { code: number; message: string } {
  const status = { code: 0, message: '' };
  readMessage(bytes, 'Status', { 2: WIRE_LEN, 3: WIRE_VARINT }, (field, r) => {
    if (field === 2) status.message = r.string();
    else status.code = Number(r.varint());
  });
  return status;
}

type SpanFields = Omit<DecodedSpan, 'resource' | 'scope' | 'scopeVersion'>;

// trace.proto Span.Link: 1 trace_id, 2 span_id, 3 trace_state, 4 attributes, 5 dropped_attributes_count,
// 6 flags (fixed32).
function decodeLink(bytes: Uint8Array): DecodedLink {
  const link: DecodedLink = { traceId: '', spanId: '', traceState: '', flags: 0, attributes: {} };
  readMessage(
    bytes,
    'Span.Link',
    { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN, 4: WIRE_LEN, 5: WIRE_VARINT, 6: WIRE_FIXED32 },
    (field, r) => {
      if (field === 1) link.traceId = hex(r.bytes());
      else if (field === 2) link.spanId = hex(r.bytes());
      else if (field === 3) link.traceState = r.string();
      else if (field === 4) decodeKeyValue(r.bytes(), link.attributes);
      else if (field === 5) r.varint();
      else link.flags = r.fixed32();
    },
  );
  if (link.traceId.length !== 32 || link.spanId.length !== 16)
    throw new Error(`Span.Link with trace id ${link.traceId} and span id ${link.spanId}`);
  return link;
}

// trace.proto Span.Event: 1 time_unix_nano (fixed64), 2 name, 3 attributes, 4 dropped_attributes_count.
function decodeEvent(bytes: Uint8Array): DecodedEvent {
  const event: DecodedEvent = { timeUnixNano: 0n, name: '', attributes: {} };
  readMessage(
    bytes,
    'Span.Event',
    { 1: WIRE_FIXED64, 2: WIRE_LEN, 3: WIRE_LEN, 4: WIRE_VARINT },
    (field, r) => {
      if (field === 1) event.timeUnixNano = r.fixed64();
      else if (field === 2) event.name = r.string();
      else if (field === 3) decodeKeyValue(r.bytes(), event.attributes);
      else r.varint();
    },
  );
  return event;
}

// trace.proto Span: 1 trace_id, 2 span_id, 3 trace_state, 4 parent_span_id, 5 name, 6 kind,
// 7 start_time_unix_nano (fixed64), 8 end_time_unix_nano (fixed64), 9 attributes, 10 dropped_attributes_count,
// 11 events, 12 dropped_events_count, 13 links, 14 dropped_links_count, 15 status, 16 flags (fixed32).
function decodeSpan(bytes: Uint8Array): SpanFields {
  const span: SpanFields = {
    traceId: '',
    spanId: '',
    parentSpanId: '',
    name: '',
    kind: 0,
    startTimeUnixNano: 0n,
    endTimeUnixNano: 0n,
    attributes: {},
    status: { code: 0, message: '' },
    links: [],
    events: [],
  };
  readMessage(
    bytes,
    'Span',
    {
      1: WIRE_LEN,
      2: WIRE_LEN,
      3: WIRE_LEN,
      4: WIRE_LEN,
      5: WIRE_LEN,
      6: WIRE_VARINT,
      7: WIRE_FIXED64,
      8: WIRE_FIXED64,
      9: WIRE_LEN,
      10: WIRE_VARINT,
      11: WIRE_LEN,
      12: WIRE_VARINT,
      13: WIRE_LEN,
      14: WIRE_VARINT,
      15: WIRE_LEN,
      16: WIRE_FIXED32,
    },
    (field, r) => {
      switch (field) {
        case 1:
          span.traceId = hex(r.bytes());
          break;
        case 2:
          span.spanId = hex(r.bytes());
          break;
        case 4:
          span.parentSpanId = hex(r.bytes());
          break;
        case 5:
          span.name = r.string();
          break;
        case 6:
          span.kind = Number(r.varint());
          break;
        case 7:
          span.startTimeUnixNano = r.fixed64();
          break;
        case 8:
          span.endTimeUnixNano = r.fixed64();
          break;
        case 9:
          decodeKeyValue(r.bytes(), span.attributes);
          break;
        case 11:
          span.events.push(decodeEvent(r.bytes()));
          break;
        case 13:
          span.links.push(decodeLink(r.bytes()));
          break;
        case 15:
          span.status = decodeStatus(r.bytes());
          break;
        case 16:
          r.fixed32();
          break;
        default:
          if (field === 3) r.bytes();
          else r.varint();
      }
    },
  );
  return span;
}

// common.proto InstrumentationScope: 1 name, 2 version, 3 attributes, 4 dropped_attributes_count.
function decodeScope(bytes: Uint8Array): { name: string; version: string } {
  const scope = { name: '', version: '' };
  readMessage(
    bytes,
    'InstrumentationScope',
    { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN, 4: WIRE_VARINT },
    (f, r) => {
      if (f === 1) scope.name = r.string();
      else if (f === 2) scope.version = r.string();
      else r.skip(f === 4 ? WIRE_VARINT : WIRE_LEN);
    },
  );
  return scope;
}

// trace.proto ScopeSpans: 1 scope, 2 spans, 3 schema_url.
function decodeScopeSpans(
  bytes: Uint8Array,
  resource: Record<string, AttributeValue>,
  out: DecodedSpan[],
): void {
  let scope = { name: '', version: '' };
  const spans: SpanFields[] = [];
  readMessage(bytes, 'ScopeSpans', { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN }, (field, r) => {
    if (field === 1) scope = decodeScope(r.bytes());
    else if (field === 2) spans.push(decodeSpan(r.bytes()));
    else r.bytes();
  });
  for (const span of spans) out.push({ ...span, resource, scope: scope.name, scopeVersion: scope.version });
}

// trace.proto ResourceSpans: 1 resource, 2 scope_spans, 3 schema_url.
function decodeResourceSpans(bytes: Uint8Array, out: DecodedSpan[]): void {
  let resource: Record<string, AttributeValue> = {};
  const scopeSpans: Uint8Array[] = [];
  readMessage(bytes, 'ResourceSpans', { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN }, (field, r) => {
    if (field === 1) resource = decodeResource(r.bytes());
    else if (field === 2) scopeSpans.push(r.bytes());
    else r.bytes();
  });
  for (const scope of scopeSpans) decodeScopeSpans(scope, resource, out);
}

/** trace_service.proto ExportTraceServiceRequest: 1 resource_spans (repeated ResourceSpans). */
export function decodeExportTraceServiceRequest(bytes: Uint8Array): DecodedSpan[] {
  const out: DecodedSpan[] = [];
  readMessage(bytes, 'ExportTraceServiceRequest', { 1: WIRE_LEN }, (_field, r) =>
    decodeResourceSpans(r.bytes(), out),
  );
  return out;
}

// logs.proto LogRecord: 1 time_unix_nano (fixed64), 2 severity_number, 3 severity_text, 5 body (AnyValue),
// 6 attributes, 7 dropped_attributes_count, 8 flags (fixed32), 9 trace_id, 10 span_id,
// 11 observed_time_unix_nano (fixed64), 12 event_name.
function decodeLogRecord(bytes: Uint8Array): Omit<DecodedLogRecord, 'resource' | 'scope'> {
  const record = {
    timeUnixNano: 0n,
    severityNumber: 0,
    severityText: '',
    body: '' as AttributeValue,
    attributes: {} as Record<string, AttributeValue>,
    traceId: '',
    spanId: '',
  };
  readMessage(
    bytes,
    'LogRecord',
    {
      1: WIRE_FIXED64,
      2: WIRE_VARINT,
      3: WIRE_LEN,
      5: WIRE_LEN,
      6: WIRE_LEN,
      7: WIRE_VARINT,
      8: WIRE_FIXED32,
      9: WIRE_LEN,
      10: WIRE_LEN,
      11: WIRE_FIXED64,
      12: WIRE_LEN,
    },
    (field, r) => {
      if (field === 1) record.timeUnixNano = r.fixed64();
      else if (field === 2) record.severityNumber = Number(r.varint());
      else if (field === 3) record.severityText = r.string();
      else if (field === 5) record.body = decodeAnyValue(r.bytes());
      else if (field === 6) decodeKeyValue(r.bytes(), record.attributes);
      else if (field === 9) record.traceId = hex(r.bytes());
      else if (field === 10) record.spanId = hex(r.bytes());
      else if (field === 8) r.fixed32();
      else if (field === 11) r.fixed64();
      else if (field === 12) r.bytes();
      else r.varint();
    },
  );
  return record;
}

/** logs_service.proto ExportLogsServiceRequest: 1 resource_logs {1 resource, 2 scope_logs {1 scope, 2 log_records}}. */
export function decodeExportLogsServiceRequest(bytes: Uint8Array): DecodedLogRecord[] {
  const out: DecodedLogRecord[] = [];
  readMessage(bytes, 'ExportLogsServiceRequest', { 1: WIRE_LEN }, (_f, r) => {
    let resource: Record<string, AttributeValue> = {};
    const scopes: Uint8Array[] = [];
    readMessage(r.bytes(), 'ResourceLogs', { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN }, (field, rr) => {
      if (field === 1) resource = decodeResource(rr.bytes());
      else if (field === 2) scopes.push(rr.bytes());
      else rr.bytes();
    });
    for (const scopeLogs of scopes) {
      let scope = '';
      const records: Omit<DecodedLogRecord, 'resource' | 'scope'>[] = [];
      readMessage(scopeLogs, 'ScopeLogs', { 1: WIRE_LEN, 2: WIRE_LEN, 3: WIRE_LEN }, (field, rr) => {
        if (field === 1) scope = decodeScope(rr.bytes()).name;
        else if (field === 2) records.push(decodeLogRecord(rr.bytes()));
        else rr.bytes();
      });
      for (const record of records) out.push({ ...record, resource, scope });
    }
  });
  return out;
}

// ---- OTLP/JSON ---------------------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function field(value: Json | undefined, key: string): Json | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value[key] : undefined;
}

function list(value: Json | undefined): Json[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Error(`expected a JSON array, got ${JSON.stringify(value)}`);
  return value;
}

function text(value: Json | undefined, fallback = ''): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw new Error(`expected a JSON string, got ${JSON.stringify(value)}`);
  return value;
}

function hexId(value: Json | undefined, length: number, allowEmpty: boolean): string {
  const id = text(value);
  if (id === '' && allowEmpty) return '';
  if (!new RegExp(`^[0-9a-f]{${length}}$`).test(id))
    throw new Error(`bad OTLP/JSON id ${JSON.stringify(id)}`);
  return id;
}

// OTLP/JSON encodes 64-bit integers as decimal strings (numbers are tolerated).
function int64(value: Json | undefined): bigint {
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  throw new Error(`bad OTLP/JSON int64 ${JSON.stringify(value)}`);
}

function jsonAnyValue(value: Json | undefined): AttributeValue {
  const s = field(value, 'stringValue');
  if (typeof s === 'string') return s;
  const b = field(value, 'boolValue');
  if (typeof b === 'boolean') return b;
  const i = field(value, 'intValue');
  if (i !== undefined) return Number(int64(i));
  const d = field(value, 'doubleValue');
  if (typeof d === 'number') return d;
  throw new Error(`unsupported OTLP/JSON AnyValue ${JSON.stringify(value)}`);
}

function jsonAttributes(value: Json | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list(value)) out[text(field(kv, 'key'))] = jsonAnyValue(field(kv, 'value'));
  return out;
}

function jsonLink(link: Json): DecodedLink {
  const flags = field(link, 'flags');
  return {
    traceId: hexId(field(link, 'traceId'), 32, false),
    spanId: hexId(field(link, 'spanId'), 16, false),
    traceState: text(field(link, 'traceState')),
    flags: typeof flags === 'number' ? flags : 0,
    attributes: jsonAttributes(field(link, 'attributes')),
  };
}

export function decodeJsonExportTraceServiceRequest(body: string): DecodedSpan[] {
  const out: DecodedSpan[] = [];
  const request = JSON.parse(body) as Json;
  for (const resourceSpans of list(field(request, 'resourceSpans'))) {
    const resource = jsonAttributes(field(field(resourceSpans, 'resource'), 'attributes'));
    for (const scopeSpans of list(field(resourceSpans, 'scopeSpans'))) {
      const scope = field(scopeSpans, 'scope');
      for (const span of list(field(scopeSpans, 'spans'))) {
        const status = field(span, 'status');
        const kind = field(span, 'kind');
        const code = field(status, 'code');
        out.push({
          traceId: hexId(field(span, 'traceId'), 32, false),
          spanId: hexId(field(span, 'spanId'), 16, false),
          parentSpanId: hexId(field(span, 'parentSpanId'), 16, true),
          name: text(field(span, 'name')),
          kind: typeof kind === 'number' ? kind : 0,
          startTimeUnixNano: int64(field(span, 'startTimeUnixNano')),
          endTimeUnixNano: int64(field(span, 'endTimeUnixNano')),
          attributes: jsonAttributes(field(span, 'attributes')),
          status: { code: typeof code === 'number' ? code : 0, message: text(field(status, 'message')) },
          links: list(field(span, 'links')).map(jsonLink),
          events: list(field(span, 'events')).map((event) => ({
            timeUnixNano: int64(field(event, 'timeUnixNano')),
            name: text(field(event, 'name')),
            attributes: jsonAttributes(field(event, 'attributes')),
          })),
          resource,
          scope: text(field(scope, 'name')),
          scopeVersion: text(field(scope, 'version')),
        });
      }
    }
  }
  return out;
}

// ---- servers -----------------------------------------------------------------------------------------

class SpanStore {
  readonly spans: DecodedSpan[] = [];
  readonly logs: DecodedLogRecord[] = [];
  readonly requestLog: ReceivedRequest[] = [];
  private waiters: Array<() => void> = [];

  record(entry: ReceivedRequest, spans: DecodedSpan[]): void {
    this.requestLog.push(entry);
    this.spans.push(...spans);
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once `ready()` holds, re-checked after every request; rejects after `timeoutMs`. */
  waitFor(ready: () => boolean, what: () => string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`));
      }, timeoutMs);
      const check = (): void => {
        if (ready()) {
          clearTimeout(timer);
          resolve();
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  waitForSpans(n: number, timeoutMs: number): Promise<DecodedSpan[]> {
    return this.waitFor(
      () => this.spans.length >= n,
      () => `${n} spans (have ${this.spans.length})`,
      timeoutMs,
    ).then(() => this.spans);
  }

  waitForLogs(n: number, timeoutMs: number): Promise<DecodedLogRecord[]> {
    return this.waitFor(
      () => this.logs.length >= n,
      () => `${n} log records (have ${this.logs.length})`,
      timeoutMs,
    ).then(() => this.logs);
  }

  waitForRequests(n: number, timeoutMs: number): Promise<void> {
    return this.waitFor(
      () => this.requestLog.length >= n,
      () => `${n} requests (have ${this.requestLog.length})`,
      timeoutMs,
    );
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Starts an OTLP/HTTP receiver on 127.0.0.1 (random port). */
export async function startOtlpReceiver(
  opts: { status?: StatusRule; delayMs?: number } = {},
): Promise<OtlpReceiver> {
  const store = new SpanStore();
  let statusRule: StatusRule = opts.status ?? 200;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method === 'POST' && req.url === '/v1/logs') {
      const raw = await readBody(req);
      const encoding = req.headers['content-encoding'] ?? '';
      const body = encoding === 'gzip' ? gunzipSync(raw) : raw;
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
      if (type !== 'application/x-protobuf')
        throw new Error(`unexpected logs content-type ${JSON.stringify(type)}`);
      store.logs.push(...decodeExportLogsServiceRequest(body));
      store.record(
        { contentType: type, contentEncoding: encoding, headers: req.headers, status: 200, spanCount: 0 },
        [],
      );
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      return;
    }
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    const raw = await readBody(req);
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
    const contentEncoding = req.headers['content-encoding'] ?? '';
    const status = typeof statusRule === 'function' ? statusRule(req) : statusRule;
    if (opts.delayMs) await new Promise((resolve) => setTimeout(resolve, opts.delayMs));

    let spans: DecodedSpan[] = [];
    if (status >= 200 && status < 300) {
      const body = contentEncoding === 'gzip' ? gunzipSync(raw) : raw;
      if (contentType === 'application/x-protobuf') spans = decodeExportTraceServiceRequest(body);
      else if (contentType === 'application/json')
        spans = decodeJsonExportTraceServiceRequest(body.toString());
      else throw new Error(`unexpected content-type ${JSON.stringify(contentType)}`);
    }
    store.record(
      { contentType, contentEncoding, headers: req.headers, status, spanCount: spans.length },
      spans,
    );
    // An empty ExportTraceServiceResponse: zero protobuf bytes, or `{}` in JSON.
    res.writeHead(status, { 'content-type': contentType || 'application/x-protobuf' });
    res.end(contentType === 'application/json' ? '{}' : undefined);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      store.record(
        { contentType: 'error', contentEncoding: '', headers: req.headers, status: 400, spanCount: 0 },
        [],
      );
      res.writeHead(400, { 'content-type': 'text/plain' }).end(String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    spans: store.spans,
    logs: store.logs,
    get requests() {
      return store.requestLog.length;
    },
    requestLog: store.requestLog,
    waitForSpans: (n, timeoutMs = 10_000) => store.waitForSpans(n, timeoutMs),
    waitForLogs: (n, timeoutMs = 10_000) => store.waitForLogs(n, timeoutMs),
    waitForRequests: (n, timeoutMs = 10_000) => store.waitForRequests(n, timeoutMs),
    setStatus: (status) => {
      statusRule = status;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        // Exporters keep connections alive; without this, close() would wait for them to time out.
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}

export interface OtlpGrpcReceiver {
  /** `http://127.0.0.1:PORT`, as OTEL_EXPORTER_OTLP_ENDPOINT would give it for grpc. */
  url: string;
  spans: DecodedSpan[];
  readonly requests: number;
  /** Metadata (headers) of the last request. */
  lastMetadata: Record<string, string>;
  waitForSpans(n: number, timeoutMs?: number): Promise<DecodedSpan[]>;
  close(): Promise<void>;
}

const EXPORT_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';

/** Starts an OTLP/gRPC TraceService on 127.0.0.1 (random port), taking the request as raw bytes. */
export async function startOtlpGrpcReceiver(): Promise<OtlpGrpcReceiver> {
  const store = new SpanStore();
  const identity = (bytes: Buffer): Buffer => bytes;
  const service: grpc.ServiceDefinition = {
    Export: {
      path: EXPORT_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  };
  const receiver: OtlpGrpcReceiver = {
    url: '',
    spans: store.spans,
    get requests() {
      return store.requestLog.length;
    },
    lastMetadata: {},
    waitForSpans: (n, timeoutMs = 10_000) => store.waitForSpans(n, timeoutMs),
    close: () => Promise.resolve(),
  };
  const server = new grpc.Server();
  server.addService(service, {
    Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      try {
        const spans = decodeExportTraceServiceRequest(call.request);
        const metadata: Record<string, string> = {};
        for (const [key, value] of Object.entries(call.metadata.getMap())) metadata[key] = String(value);
        receiver.lastMetadata = metadata;
        store.record(
          {
            contentType: 'application/grpc',
            contentEncoding: '',
            headers: {},
            status: 0,
            spanCount: spans.length,
          },
          spans,
        );
        callback(null, Buffer.alloc(0));
      } catch (error) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: String(error) });
      }
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  receiver.url = `http://127.0.0.1:${port}`;
  receiver.close = () => {
    server.forceShutdown();
    return Promise.resolve();
  };
  return receiver;
}
