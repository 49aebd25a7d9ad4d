// A reporter (a separate CPython process) that streams its whole job and closes at once, possibly before
// the exporter's subscribe request is written: every event must still arrive.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { pickle } from '../../src/python/pickle-writer.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { startStandin } from '../helpers/standin.js';

describe('ReporterSubscriber against a reporter that closes right after sending', () => {
  it('delivers every event even when the subscribe request cannot be written', async () => {
    for (let run = 0; run < 8; run++) {
      const standin = await startStandin({ linger: 0, header: '8le', protocol: 4, seed: run });
      let events = 0;
      let ended!: () => void;
      const disconnected = new Promise<void>((resolve) => (ended = resolve));
      const subscriber = new ReporterSubscriber({
        path: standin.path,
        header: 'auto',
        requestHeader: { width: 8, endian: 'big' },
        subscribeRequest: pickle({ action: 'subscribe' }, { protocol: 2 }),
        maxFrameBytes: 1 << 20,
        pollIntervalMs: 20,
        backoff: { initialMs: 50, maxMs: 200 },
        decode: (frame) => unpickle(frame),
        logger: silentLogger(),
        handlers: {
          connected: () => undefined,
          event: () => (events += 1),
          frameRejected: () => undefined,
          disconnected: () => ended(),
        },
      });
      try {
        subscriber.start();
        const sent = await standin.done;
        await disconnected;
        expect(events, `run ${run}`).toBe(sent);
      } finally {
        await subscriber.stop();
        await standin.kill();
      }
    }
  });
});
