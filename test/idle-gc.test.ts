import { describe, expect, it, vi } from 'vitest';
import { exposeGc, IdleCollector } from '../src/idle-gc.js';

/** A collector over a settable event count and a counting gc; ticks are driven by hand through check(). */
function collector(options: { minEvents?: number; collections?: number } = {}) {
  let events = 0;
  const gc = vi.fn();
  const idle = new IdleCollector({ events: () => events, gc, minEvents: 1000, ...options });
  idle.start();
  return {
    idle,
    gc,
    receive: (n: number) => {
      events += n;
    },
  };
}

describe('IdleCollector', () => {
  it('collects only once a check sees no new events, after enough of them', () => {
    const { idle, gc, receive } = collector();
    receive(5000);
    expect(idle.check()).toBe(false); // events arrived since the last look: busy
    receive(1);
    expect(idle.check()).toBe(false);
    expect(gc).not.toHaveBeenCalled();
    expect(idle.check()).toBe(true); // quiet
    expect(gc).toHaveBeenCalledTimes(1);
  });

  it('never collects after fewer events than minEvents, however long it is quiet', () => {
    const { idle, gc, receive } = collector();
    receive(999);
    for (let i = 0; i < 10; i++) idle.check();
    expect(gc).not.toHaveBeenCalled();
  });

  it('collects `collections` times per quiet spell, then waits for minEvents more events', () => {
    const { idle, gc, receive } = collector({ collections: 2 });
    receive(2000);
    idle.check();
    for (let i = 0; i < 5; i++) idle.check();
    expect(gc).toHaveBeenCalledTimes(2);
    receive(500);
    idle.check();
    for (let i = 0; i < 5; i++) idle.check();
    expect(gc).toHaveBeenCalledTimes(2);
    receive(500); // 1000 since the last collections
    idle.check();
    idle.check();
    idle.check();
    expect(gc).toHaveBeenCalledTimes(4);
  });

  it('counts from start(), not from zero', () => {
    let events = 50_000;
    const gc = vi.fn();
    const idle = new IdleCollector({ events: () => events, gc, minEvents: 1000 });
    idle.start();
    idle.check();
    expect(gc).not.toHaveBeenCalled();
    events += 1000;
    idle.check();
    idle.check();
    expect(gc).toHaveBeenCalledTimes(1);
    idle.stop();
  });

  it('runs on its own timer until stopped', () => {
    vi.useFakeTimers();
    try {
      const { idle, gc, receive } = collector({ collections: 1 });
      receive(1000);
      vi.advanceTimersByTime(2000); // one busy tick, one quiet tick
      expect(gc).toHaveBeenCalledTimes(1);
      receive(1000);
      idle.stop();
      vi.advanceTimersByTime(10_000);
      expect(gc).toHaveBeenCalledTimes(1);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('exposeGc', () => {
  it('returns a collector of the main heap without --expose-gc', async () => {
    let target: object | undefined = { payload: new Array(1000).fill(1) };
    const ref = new WeakRef(target);
    target = undefined;
    // A WeakRef's target survives until the current job ends; collect after it.
    await new Promise((resolve) => setImmediate(resolve));
    exposeGc()();
    expect(ref.deref()).toBeUndefined();
  });
});
