// The benchmark's reporter: listens on a Unix socket like a pyATS 23.2 Reporter Server, answers requests as it
// does (the demo's reporter-protocol, from dist/), and when the first client subscribes (`subscribe_client`,
// answered None) writes the pre-generated stream file(s) to it as fast as it reads, then closes. get_testsuite
// says nothing ran yet: what is measured is the live stream.
// Reports, over the IPC channel, the CLOCK_MONOTONIC time (ns) of the first byte sent, comparable with every
// other process's process.hrtime / time.monotonic_ns.
import { createReadStream, rmSync } from 'node:fs';
import net from 'node:net';
import { distModule } from './dist.mjs';

const { FrameReader, encodeFrame } = await distModule('reporter/framing.js');
const { pickle } = await distModule('python/pickle-writer.js');
const { unpickle } = await distModule('python/unpickle.js');
const { SectionTree, answerRequest, unpicklableReply } = await distModule('demo/reporter-protocol.js');

const [path, ...files] = process.argv.slice(2);
if (!path || files.length === 0) {
  process.stderr.write('usage: sender.mjs SOCKET FILE...\n');
  process.exit(2);
}

let served = false;
const tree = new SectionTree();
const reply = (socket, value) =>
  socket.write(encodeFrame(pickle(value, { protocol: 4, memoize: true }), 'chunked'));

function stream(socket) {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  const sendNext = (index) => {
    if (index === files.length) {
      socket.end();
      process.send({ kind: 'sent', t0: String(t0), tEnd: String(process.hrtime.bigint()), bytes });
      return;
    }
    const file = createReadStream(files[index], { highWaterMark: 1 << 20 });
    file.on('data', (chunk) => (bytes += chunk.length));
    file.on('end', () => sendNext(index + 1));
    file.pipe(socket, { end: false });
  };
  sendNext(0);
}

const server = net.createServer((socket) => {
  socket.on('error', () => {});
  const reader = new FrameReader({ format: 'chunked', maxFrameBytes: 1 << 20 });
  const client = {};
  let streaming = false;
  socket.on('data', (chunk) => {
    // Once the stream flows, whatever the subscriber sends is read and ignored.
    if (streaming) return;
    for (const message of reader.push(chunk)) {
      let request;
      try {
        request = unpickle(message);
      } catch {
        reply(socket, unpicklableReply());
        continue;
      }
      const answer = answerRequest(request, client, tree);
      if ('refuse' in answer) {
        process.send({ kind: 'error', message: `sender: ${answer.refuse}` });
        socket.destroy();
        return;
      }
      if (answer.subscribe && served) {
        // A reconnect after the stream ended: nothing more to send.
        socket.destroy();
        return;
      }
      reply(socket, answer.reply);
      if (answer.subscribe) {
        served = streaming = true;
        stream(socket);
        return;
      }
    }
  });
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
