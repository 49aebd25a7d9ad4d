import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RESULT_VALUES, type SectionEvent } from '../../src/events/types.js';
import {
  SourceBatchReader,
  SourceBatchWriter,
  type ControlOp,
  type SourceBatch,
} from '../../src/reporter/thread-channel.js';

const text = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('Testcase', 'TestSection', 'Step', ''));
const time = fc.double({ min: -1e13, max: 1e13, noNaN: true });

/** Any event the normalizer can produce from a reporter socket: every optional field present or absent. */
const sectionEvent: fc.Arbitrary<SectionEvent> = fc
  .record(
    {
      phase: fc.constantFrom('init' as const, 'start' as const, 'stop' as const),
      event: text,
      type: text,
      seqNum: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      parentSeqNum: fc.integer({ min: -5, max: 2 ** 40 }),
      id: text,
      name: text,
      startTime: time,
      stopTime: time,
      runtime: fc.double({ min: 0, max: 1e7, noNaN: true }),
      result: fc.record(
        { value: fc.constantFrom(...RESULT_VALUES), reason: fc.string({ maxLength: 40 }) },
        { requiredKeys: ['value'] },
      ),
      logfile: text,
      logRange: fc.record({
        file: text,
        begin: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      }),
      xref: fc.record({ file: text, line: fc.integer({ min: 0, max: 1e6 }) }, { requiredKeys: [] }),
      fullid: text,
    },
    { requiredKeys: ['phase', 'event', 'type', 'seqNum'] },
  )
  .map((e) => e as SectionEvent);

type Op = { conn: number; event: SectionEvent } | ControlOp;

const controlOp: fc.Arbitrary<ControlOp> = fc.oneof(
  fc.record({
    op: fc.constant('rejected' as const),
    conn: fc.nat(9),
    reason: fc.constant('bad_seq_num'),
    detail: fc.string(),
  }),
  fc.record({
    op: fc.constant('disconnected' as const),
    conn: fc.nat(9),
    reason: fc.constantFrom('eof' as const, 'reset' as const),
  }),
);

/** Writes ops in batches of `every`, reads them back in order. */
function roundTrip(ops: Op[], every: number): Op[] {
  const writer = new SourceBatchWriter(64);
  const reader = new SourceBatchReader();
  const out: Op[] = [];
  const drain = (batch: SourceBatch | undefined) => {
    if (batch === undefined) return;
    // What postMessage does to the batch: a structured clone.
    reader.read(structuredClone(batch), {
      event: (conn, event) => out.push({ conn, event }),
      control: (op) => out.push(op),
    });
  };
  ops.forEach((op, i) => {
    if ('event' in op && !('op' in op)) writer.event(op.conn, op.event);
    else writer.control(op as ControlOp);
    if ((i + 1) % every === 0) drain(writer.take());
  });
  drain(writer.take());
  return out;
}

describe('thread channel', () => {
  it('gives back every event exactly, and controls in their place, across batches', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.record({ conn: fc.nat(9), event: sectionEvent }), controlOp), { maxLength: 60 }),
        fc.integer({ min: 1, max: 70 }),
        (ops, every) => {
          expect(roundTrip(ops, every)).toEqual(ops);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('starts the string table over when it grows large, without mixing up strings', () => {
    const events: Op[] = Array.from({ length: 150_000 }, (_, i) => ({
      conn: 0,
      event: { phase: 'start', event: 'start_step', type: 'Step', seqNum: i, name: `step ${i}` },
    }));
    expect(roundTrip(events, 1000)).toEqual(events);
  });

  it('sends each distinct string once', () => {
    const writer = new SourceBatchWriter();
    const event: SectionEvent = {
      phase: 'start',
      event: 'start_testcase',
      type: 'Testcase',
      seqNum: 1,
      id: 'tc',
    };
    writer.event(0, event);
    writer.event(0, { ...event, seqNum: 2 });
    expect(writer.take()?.strings).toEqual(['start_testcase', 'Testcase', 'tc']);
    writer.event(0, { ...event, seqNum: 3 });
    expect(writer.take()?.strings).toEqual([]);
  });
});
