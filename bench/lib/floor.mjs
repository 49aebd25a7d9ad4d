// The benchmark's floor: the exporter's decode path and nothing else — FrameReader + unpickle (from dist/) on
// the socket stream, the same way ReporterSubscriber drives them, after the same subscribe_client request (its
// reply, the first message, is not counted). Reports when `expected` frames are decoded.
import net from 'node:net';
import { distModule } from './dist.mjs';

const { FrameReader } = await distModule('reporter/framing.js');
const { unpickle } = await distModule('python/unpickle.js');
const { encodeRequest } = await distModule('reporter/protocol.js');

const [path, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
const reader = new FrameReader({ format: 'auto', maxFrameBytes: 64 * 1024 * 1024 });
// The reply to the subscription comes first.
let decoded = -1;
let failed = 0;
let cpuStart;
let done = false;

const socket = net.createConnection({ path }, () =>
  socket.write(encodeRequest({ name: 'subscribe_client' }, 'chunked')),
);
socket.on('data', (chunk) => {
  cpuStart ??= process.cpuUsage();
  for (const frame of reader.push(chunk)) {
    try {
      unpickle(frame);
      decoded++;
    } catch {
      failed++;
    }
  }
  if (!done && decoded + failed >= expected) {
    done = true;
    const tEnd = process.hrtime.bigint();
    const cpu = process.cpuUsage(cpuStart);
    process.send({
      kind: 'done',
      tEnd: String(tEnd),
      cpuMs: (cpu.user + cpu.system) / 1000,
      decoded,
      failed,
    });
  }
});
socket.on('error', (err) => {
  process.send({ kind: 'error', message: String(err) });
});
socket.on('close', () => {
  if (!done)
    process.send({ kind: 'error', message: `stream ended after ${decoded + failed} of ${expected}` });
  process.disconnect();
});
