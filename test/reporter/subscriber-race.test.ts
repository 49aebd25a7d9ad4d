// A reporter (a separate CPython process) that streams its whole job and closes at once after its last event
// (pyATS 23.2 closes ~30 ms after stop_testsuite; this one at once): every section must still arrive whole.
// The attach snapshot may catch the job mid-stream (under load it does; the last runs pace the events so that
// it does): its start of a section then stands for that section's live init_ and start_, so sections are
// compared, not event counts.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { isPyDict } from '../../src/python/index.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { startStandin } from '../helpers/standin.js';

describe('ReporterSubscriber against a reporter that closes right after sending', () => {
  it('delivers every section started and stopped once, its end only after them', async () => {
    for (let run = 0; run < 8; run++) {
      const standin = await startStandin({
        linger: 0,
        protocol: 4,
        seed: run,
        eventDelayMs: run < 6 ? 0 : 2,
      });
      const delivered: string[] = [];
      let deliveredAtEnd = -1;
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
          event: (_conn, value) => {
            if (!isPyDict(value)) return;
            const phase = String(value['event']).split('_')[0];
            if (phase !== 'init') delivered.push(`${phase} ${String(value['seq_num'])}`);
          },
          frameRejected: () => undefined,
          disconnected: () => {
            deliveredAtEnd = delivered.length;
            ended();
          },
        },
      });
      try {
        subscriber.start();
        const manifest = await standin.manifest();
        await disconnected;
        const expected = manifest.sections.flatMap((s) => [`start ${s.seq_num}`, `stop ${s.seq_num}`]);
        expect(delivered.length, `run ${run}`).toBeGreaterThan(0);
        expect([...delivered].sort(), `run ${run}`).toEqual(expected.sort());
        expect(deliveredAtEnd, `run ${run}`).toBe(delivered.length);
      } finally {
        await subscriber.stop();
        await standin.kill();
      }
    }
  });
});
