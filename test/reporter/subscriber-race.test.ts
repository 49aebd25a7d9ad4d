// A reporter (a separate CPython process) that streams its whole job and closes at once after its last event
// (pyATS 23.2 closes ~30 ms after stop_testsuite; this one at once): every event must still arrive.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { startStandin } from '../helpers/standin.js';

describe('ReporterSubscriber against a reporter that closes right after sending', () => {
  it('delivers every event, its end only after them', async () => {
    for (let run = 0; run < 8; run++) {
      const standin = await startStandin({ linger: 0, protocol: 4, seed: run });
      let events = 0;
      let eventsAtEnd = -1;
      let ended!: () => void;
      const disconnected = new Promise<void>((resolve) => (ended = resolve));
      const subscriber = new ReporterSubscriber({
        path: standin.path,
        frameFormat: 'chunked',
        maxFrameBytes: 1 << 20,
        attach: { timeoutMs: 5000, maxSections: 10_000 },
        pollIntervalMs: 20,
        backoff: { initialMs: 50, maxMs: 200 },
        decode: (frame) => unpickle(frame),
        logger: silentLogger(),
        handlers: {
          connected: () => undefined,
          event: () => (events += 1),
          frameRejected: () => undefined,
          disconnected: () => {
            eventsAtEnd = events;
            ended();
          },
        },
      });
      try {
        subscriber.start();
        const sent = await standin.done;
        await disconnected;
        expect(events, `run ${run}`).toBe(sent);
        expect(eventsAtEnd, `run ${run}`).toBe(sent);
      } finally {
        await subscriber.stop();
        await standin.kill();
      }
    }
  });
});
