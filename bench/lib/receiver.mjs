// A discarding OTLP/HTTP trace receiver for the benchmark, run as a child process (fork) so its work never
// shares the exporter's event loop. Answers every POST /v1/traces with an empty ExportTraceServiceResponse
// and counts the spans by walking only the three enclosing protobuf levels (span bodies are skipped).
import { serveReceiver } from './receiver-server.mjs';

/** Reads a protobuf varint at `pos`; returns [value, next position]. Lengths here stay below 2^53. */
function varint(buf, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = buf[pos++];
    if (byte === undefined) throw new Error('truncated varint');
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** Calls `onField(field, start, end)` for each length-delimited field in buf[start, end); skips the others. */
function eachLenField(buf, start, end, onField) {
  let pos = start;
  while (pos < end) {
    const [key, afterKey] = varint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    pos = afterKey;
    if (wire === 0) pos = varint(buf, pos)[1];
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [length, body] = varint(buf, pos);
      onField(field, body, body + length);
      pos = body + length;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
}

/** ExportTraceServiceRequest.resource_spans(1) → ResourceSpans.scope_spans(2) → ScopeSpans.spans(2). */
export function countSpans(buf) {
  let spans = 0;
  eachLenField(buf, 0, buf.length, (f1, s1, e1) => {
    if (f1 !== 1) return;
    eachLenField(buf, s1, e1, (f2, s2, e2) => {
      if (f2 !== 2) return;
      eachLenField(buf, s2, e2, (f3) => {
        if (f3 === 2) spans++;
      });
    });
  });
  return spans;
}

serveReceiver(countSpans);
