// A reporter that sends its whole (short) stream and closes before reading anything: the events it sent are in
// the subscriber's receive buffer when the subscribe request would be written. An early write failed with EPIPE
// and Node destroyed the socket with the events unread, uncounted. Found by the lifecycle tests (a stand-in
// killed 30 events in, within a millisecond of accepting); kept as the regression test of the fix.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { parseHeaderFormat } from '../../src/reporter/framing.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { TempDirs, until } from './support.js';

const dirs = new TempDirs();
afterAll(() => dirs.removeAll());

const QUICK_REPORTER = `
import os, pickle, socket, struct, sys
path, count = sys.argv[1], int(sys.argv[2])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(1)
print('READY', flush=True)
conn, _ = listener.accept()
for i in range(count):
    payload = pickle.dumps({'event': 'start_section', 'seq_num': i + 1}, protocol=4)
    conn.sendall(struct.pack('>Q', len(payload)) + payload)
conn.close()
listener.close()
os.unlink(path)
print('DONE', flush=True)
`;

describe('subscriber and a reporter that closes at once', () => {
  it('delivers the events a reporter sent before it closed without reading the subscribe request', async () => {
    const path = join(dirs.make(), 'reporter.sock');
    const reporter = spawn('python3', ['-c', QUICK_REPORTER, path, '20'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const output: string[] = [];
    reporter.stdout.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
    await until('the reporter to listen', () => (output.join('').includes('READY') ? true : undefined));
    const events: unknown[] = [];
    let disconnected = false;
    const subscriber = new ReporterSubscriber({
      path,
      header: 'auto',
      requestHeader: parseHeaderFormat('8be'),
      subscribeRequest: Uint8Array.from([0x80, 0x02, 0x7d, 0x2e]),
      maxFrameBytes: 1 << 20,
      pollIntervalMs: 20,
      backoff: { initialMs: 10_000, maxMs: 10_000 },
      decode: (frame) => unpickle(frame),
      logger: silentLogger(),
      handlers: {
        connected: () => {
          // Stand-in for a busy event loop: by the time the request is written, the reporter is gone.
          const until = Date.now() + 300;
          while (Date.now() < until) {
            // busy wait
          }
        },
        event: (_conn, value) => events.push(value),
        frameRejected: () => undefined,
        disconnected: () => {
          disconnected = true;
        },
      },
    });
    subscriber.start();
    try {
      await until('the connection to end', () => (disconnected ? true : undefined), 10_000);
      expect(events).toHaveLength(20);
    } finally {
      await subscriber.stop();
      reporter.kill();
    }
  });
});
