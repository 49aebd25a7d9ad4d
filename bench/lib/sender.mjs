// The benchmark's reporter: listens on a Unix socket like a pyATS Reporter Server, and when the first subscriber
// connects writes the pre-generated stream file(s) to it as fast as the subscriber reads, then closes.
// Reports, over the IPC channel, the CLOCK_MONOTONIC time (ns) of the first byte sent, comparable with every
// other process's process.hrtime / time.monotonic_ns.
import { createReadStream, rmSync } from 'node:fs';
import net from 'node:net';

const [path, ...files] = process.argv.slice(2);
if (!path || files.length === 0) {
  process.stderr.write('usage: sender.mjs SOCKET FILE...\n');
  process.exit(2);
}

let served = false;
const server = net.createServer((socket) => {
  if (served) {
    // A reconnect after the stream ended: nothing more to send.
    socket.destroy();
    return;
  }
  served = true;
  // Whatever the subscriber sends (a subscribe request) is read and ignored.
  socket.on('data', () => {});
  socket.on('error', () => {});
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  const sendNext = (index) => {
    if (index === files.length) {
      socket.end();
      process.send({ kind: 'sent', t0: String(t0), tEnd: String(process.hrtime.bigint()), bytes });
      return;
    }
    const stream = createReadStream(files[index], { highWaterMark: 1 << 20 });
    stream.on('data', (chunk) => (bytes += chunk.length));
    stream.on('end', () => sendNext(index + 1));
    stream.pipe(socket, { end: false });
  };
  sendNext(0);
});

process.on('message', (message) => {
  if (message.cmd === 'stop') {
    server.close();
    rmSync(path, { force: true });
    process.exit(0);
  }
});

rmSync(path, { force: true });
server.listen(path, () => process.send({ kind: 'ready' }));
