// An OTLP/HTTP trace receiver that decodes every request in full, as an OpenTelemetry Collector's otlp receiver
// does before anything else: each POST /v1/traces body (gunzipped if sent so) is parsed into
// ExportTraceServiceRequest objects — resources, scopes, spans, attributes, events, links, status — with
// protobufjs (in node_modules through @grpc/proto-loader) from the opentelemetry-proto field numbers below.
// Run as a child process (fork) so its CPU is its own, like a Collector beside the exporter; IPC as in
// receiver-server.mjs. A request that does not decode is answered 400.
import { gunzipSync } from 'node:zlib';
import protobuf from 'protobufjs';
import { serveReceiver } from './receiver-server.mjs';

/** The `attributes` and `droppedAttributesCount` fields of a message, numbered `id` and `id + 1`. */
const attributes = (id) => ({
  attributes: { rule: 'repeated', type: 'KeyValue', id },
  droppedAttributesCount: { type: 'uint32', id: id + 1 },
});
const kv = { key: { type: 'string', id: 1 }, value: { type: 'AnyValue', id: 2 } };
/** opentelemetry-proto v1 (common, resource, trace, collector/trace), the fields an SDK sends. */
const SCHEMA = {
  nested: {
    AnyValue: {
      oneofs: {
        value: {
          oneof: [
            'stringValue',
            'boolValue',
            'intValue',
            'doubleValue',
            'arrayValue',
            'kvlistValue',
            'bytesValue',
          ],
        },
      },
      fields: {
        stringValue: { type: 'string', id: 1 },
        boolValue: { type: 'bool', id: 2 },
        intValue: { type: 'int64', id: 3 },
        doubleValue: { type: 'double', id: 4 },
        arrayValue: { type: 'ArrayValue', id: 5 },
        kvlistValue: { type: 'KeyValueList', id: 6 },
        bytesValue: { type: 'bytes', id: 7 },
      },
    },
    ArrayValue: { fields: { values: { rule: 'repeated', type: 'AnyValue', id: 1 } } },
    KeyValueList: { fields: { values: { rule: 'repeated', type: 'KeyValue', id: 1 } } },
    KeyValue: { fields: kv },
    InstrumentationScope: {
      fields: {
        name: { type: 'string', id: 1 },
        version: { type: 'string', id: 2 },
        ...attributes(3),
      },
    },
    Resource: { fields: attributes(1) },
    Status: { fields: { message: { type: 'string', id: 2 }, code: { type: 'int32', id: 3 } } },
    Event: {
      fields: {
        timeUnixNano: { type: 'fixed64', id: 1 },
        name: { type: 'string', id: 2 },
        ...attributes(3),
      },
    },
    Link: {
      fields: {
        traceId: { type: 'bytes', id: 1 },
        spanId: { type: 'bytes', id: 2 },
        traceState: { type: 'string', id: 3 },
        ...attributes(4),
        flags: { type: 'fixed32', id: 6 },
      },
    },
    Span: {
      fields: {
        traceId: { type: 'bytes', id: 1 },
        spanId: { type: 'bytes', id: 2 },
        traceState: { type: 'string', id: 3 },
        parentSpanId: { type: 'bytes', id: 4 },
        flags: { type: 'fixed32', id: 16 },
        name: { type: 'string', id: 5 },
        kind: { type: 'int32', id: 6 },
        startTimeUnixNano: { type: 'fixed64', id: 7 },
        endTimeUnixNano: { type: 'fixed64', id: 8 },
        ...attributes(9),
        events: { rule: 'repeated', type: 'Event', id: 11 },
        droppedEventsCount: { type: 'uint32', id: 12 },
        links: { rule: 'repeated', type: 'Link', id: 13 },
        droppedLinksCount: { type: 'uint32', id: 14 },
        status: { type: 'Status', id: 15 },
      },
    },
    ScopeSpans: {
      fields: {
        scope: { type: 'InstrumentationScope', id: 1 },
        spans: { rule: 'repeated', type: 'Span', id: 2 },
        schemaUrl: { type: 'string', id: 3 },
      },
    },
    ResourceSpans: {
      fields: {
        resource: { type: 'Resource', id: 1 },
        scopeSpans: { rule: 'repeated', type: 'ScopeSpans', id: 2 },
        schemaUrl: { type: 'string', id: 3 },
      },
    },
    ExportTraceServiceRequest: {
      fields: { resourceSpans: { rule: 'repeated', type: 'ResourceSpans', id: 1 } },
    },
  },
};

const ExportTraceServiceRequest = protobuf.Root.fromJSON(SCHEMA).lookupType('ExportTraceServiceRequest');

/** Decodes a whole request and returns its span count (from the decoded objects, not a skim of the bytes). */
function decodeSpans(body) {
  const request = ExportTraceServiceRequest.decode(body);
  let spans = 0;
  for (const resourceSpans of request.resourceSpans) {
    for (const scopeSpans of resourceSpans.scopeSpans) spans += scopeSpans.spans.length;
  }
  return spans;
}

serveReceiver(
  (body, req) => decodeSpans(req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body),
  400,
);
