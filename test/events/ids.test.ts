import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runIdFor, spanIdFor, traceIdFor } from '../../src/events/ids.js';

describe('traceIdFor', () => {
  it('is 32 lowercase hex chars, not all zero, and stable', () => {
    const id = traceIdFor('bgp_job@2024-05-01T12:00:00.123Z');
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(id).not.toBe('0'.repeat(32));
    expect(traceIdFor('bgp_job@2024-05-01T12:00:00.123Z')).toBe(id);
  });

  it('pins the derivation so a backfill reproduces ids sent by an older build', () => {
    // sha256('pyats-exporter/trace\0' + runId) and sha256('pyats-exporter/span\0' + runId + '\0' + seqNum),
    // truncated; changing either would split a job's trace between an old and a new build.
    const runId = 'job@2024-05-01T12:00:00.000Z';
    expect(traceIdFor(runId)).toBe('3eca126a67c23d2c765926e9fb816c0f');
    expect(spanIdFor(runId, 7)).toBe('8a8c8632296b0507');
  });

  it('differs between runs', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (a, b) => {
        fc.pre(a !== b);
        expect(traceIdFor(a)).not.toBe(traceIdFor(b));
      }),
    );
  });
});

describe('spanIdFor', () => {
  it('is 16 lowercase hex chars, not all zero, and stable', () => {
    fc.assert(
      fc.property(fc.string(), fc.nat(), (runId, seqNum) => {
        const id = spanIdFor(runId, seqNum);
        expect(id).toMatch(/^[0-9a-f]{16}$/);
        expect(id).not.toBe('0'.repeat(16));
        expect(spanIdFor(runId, seqNum)).toBe(id);
      }),
    );
  });

  it('is distinct for every seq_num of a run and across runs', () => {
    const seen = new Set<string>();
    for (const runId of ['a@1', 'a@2', 'b@1']) {
      for (let seq = 0; seq < 2000; seq += 1) seen.add(spanIdFor(runId, seq));
    }
    expect(seen.size).toBe(6000);
  });

  it('does not let the run id and seq_num run together', () => {
    expect(spanIdFor('job@1', 23)).not.toBe(spanIdFor('job@12', 3));
  });

  it('is not a prefix of the trace id of the same run', () => {
    expect(traceIdFor('job@1').startsWith(spanIdFor('job@1', 0))).toBe(false);
  });
});

describe('runIdFor', () => {
  it('uses the ISO time of the suite start when known', () => {
    const start = Date.UTC(2024, 4, 1, 12, 0, 0, 123) + 0.456;
    expect(runIdFor('bgp_job', start, 'ignored')).toBe('bgp_job@2024-05-01T12:00:00.123Z');
  });

  it('uses the fallback when the start is unknown or not a representable time', () => {
    expect(runIdFor('unknown', undefined, 'seen-1714564800000')).toBe('unknown@seen-1714564800000');
    expect(runIdFor('job', Number.NaN, 'f')).toBe('job@f');
    expect(runIdFor('job', 1e17, 'f')).toBe('job@f');
  });

  it('gives different trace ids to two runs of the same job', () => {
    const first = runIdFor('job', Date.UTC(2024, 0, 1), 'x');
    const second = runIdFor('job', Date.UTC(2024, 0, 2), 'x');
    expect(traceIdFor(first)).not.toBe(traceIdFor(second));
  });
});
