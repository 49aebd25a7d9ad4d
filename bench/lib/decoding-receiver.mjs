// An OTLP/HTTP trace receiver that decodes every request in full, as an OpenTelemetry Collector's otlp receiver
// does before anything else: each POST /v1/traces body (gunzipped if sent so) is parsed into
// ExportTraceServiceRequest objects — resources, scopes, spans, attributes, events, links, status — with
// protobufjs (in node_modules through @grpc/proto-loader) from the opentelemetry-proto field numbers below.
// Run as a child process (fork) so its CPU is its own, like a Collector beside the exporter. Same IPC as
// receiver.mjs: `ready` {url}, `stats` → {requests, spans, bytes, errors}, `stop`.
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import protobuf from 'protobufjs';

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
        attributes: { rule: 'repeated', type: 'KeyValue', id: 3 },
        droppedAttributesCount: { type: 'uint32', id: 4 },
      },
    },
    Resource: {
      fields: {
        attributes: { rule: 'repeated', type: 'KeyValue', id: 1 },
        droppedAttributesCount: { type: 'uint32', id: 2 },
      },
    },
    Status: { fields: { message: { type: 'string', id: 2 }, code: { type: 'int32', id: 3 } } },
    Event: {
      fields: {
        timeUnixNano: { type: 'fixed64', id: 1 },
        name: { type: 'string', id: 2 },
        attributes: { rule: 'repeated', type: 'KeyValue', id: 3 },
        droppedAttributesCount: { type: 'uint32', id: 4 },
      },
    },
    Link: {
      fields: {
        traceId: { type: 'bytes', id: 1 },
        spanId: { type: 'bytes', id: 2 },
        traceState: { type: 'string', id: 3 },
        attributes: { rule: 'repeated', type: 'KeyValue', id: 4 },
        droppedAttributesCount: { type: 'uint32', id: 5 },
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
        attributes: { rule: 'repeated', type: 'KeyValue', id: 9 },
        droppedAttributesCount: { type: 'uint32', id: 10 },
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

const stats = { requests: 0, spans: 0, bytes: 0, errors: 0 };

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    stats.requests++;
    stats.bytes += body.length;
    try {
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      stats.spans += decodeSpans(body);
    } catch {
      stats.errors++;
      res.writeHead(400).end();
      return;
    }
    // An empty ExportTraceServiceResponse: every span accepted.
    res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': '0' });
    res.end();
  });
});
server.keepAliveTimeout = 60_000;

process.on('message', (message) => {
  if (message.cmd === 'stats') process.send({ kind: 'stats', ...stats });
  if (message.cmd === 'stop') server.close(() => process.exit(0));
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.send({ kind: 'ready', url: `http://127.0.0.1:${port}` });
});
