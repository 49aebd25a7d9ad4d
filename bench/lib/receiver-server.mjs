// What receiver.mjs and decoding-receiver.mjs share: the OTLP/HTTP server on 127.0.0.1 and its IPC — `ready`
// {url}, `stats` → {requests, spans, bytes, errors}, `stop`.
import { createServer } from 'node:http';

/**
 * Serves every POST with an empty ExportTraceServiceResponse, counting the spans `spansOf(body, req)` finds;
 * when it throws, the request counts as an error and is answered `errorStatus` (200: accepted all the same).
 */
export function serveReceiver(spansOf, errorStatus = 200) {
  const stats = { requests: 0, spans: 0, bytes: 0, errors: 0 };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      stats.requests++;
      stats.bytes += body.length;
      try {
        stats.spans += spansOf(body, req);
      } catch {
        stats.errors++;
        if (errorStatus !== 200) {
          res.writeHead(errorStatus).end();
          return;
        }
      }
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
}
