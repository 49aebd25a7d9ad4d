import { describe, expect, it } from 'vitest';
import type { SectionEvent } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { DecodeThread } from '../../src/reporter/decode-thread.js';
import type { ConnectionInfo, DisconnectReason } from '../../src/reporter/subscriber.js';

describe('DecodeThread', () => {
  it('ends the streams of a decode thread that died, and follows its sockets on a new one', async () => {
    const calls: string[] = [];
    const activity: string[] = [];
    const thread = new DecodeThread({
      // The fixture reads only `crashes`; the real worker's options are not needed by it.
      worker: { crashes: new Int32Array(new SharedArrayBuffer(4)) } as never,
      workerUrl: new URL('../fixtures/crashing-decode-worker.mjs', import.meta.url),
      handlers: {
        connected: (conn: ConnectionInfo) => calls.push(`connected ${conn.id} ${conn.path}`),
        event: (conn: ConnectionInfo, event: SectionEvent) => calls.push(`event ${conn.id} ${event.seqNum}`),
        rejected: () => calls.push('rejected'),
        fieldDropped: () => calls.push('fieldDropped'),
        frameRejected: () => calls.push('frameRejected'),
        disconnected: (conn: ConnectionInfo, reason: DisconnectReason) =>
          calls.push(`disconnected ${conn.id} ${reason}`),
      },
      sinksBehind: () => false,
      logger: silentLogger(),
    });
    const subscriber = thread.createSubscriber('/runinfo/reporter.sock', {
      connected: () => activity.push('up'),
      disconnected: () => activity.push('down'),
    });
    subscriber.start();
    for (let i = 0; i < 500 && calls.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual([
      'connected thread0-conn0 /runinfo/reporter.sock',
      'event thread0-conn0 1',
      'disconnected thread0-conn0 error',
      'connected thread1-conn0 /runinfo/reporter.sock',
      'event thread1-conn0 1',
    ]);
    await subscriber.stop();
    await thread.close();
    expect(calls.at(-1)).toBe('disconnected thread1-conn0 stopped');
    expect(activity).toEqual(['up', 'down', 'up', 'down']);
  });
});
