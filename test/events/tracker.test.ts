import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SectionTracker } from '../../src/events/tracker.js';
import type {
  FinishedSection,
  JobSummary,
  SectionEvent,
  SectionSink,
  StartedSection,
} from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { readRunContext } from '../../src/reporter/runinfo.js';
import { spanIdFor, traceIdFor } from '../../src/events/ids.js';

class RecordingSink implements SectionSink {
  started: StartedSection[] = [];
  finished: FinishedSection[] = [];
  jobs: JobSummary[] = [];
  sectionStarted(s: StartedSection): void {
    this.started.push(s);
  }
  sectionFinished(s: FinishedSection): void {
    this.finished.push(s);
  }
  jobFinished(j: JobSummary): void {
    this.jobs.push(j);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
  bySeq(seq: number): FinishedSection {
    const found = this.finished.filter((s) => s.seqNum === seq);
    expect(found).toHaveLength(1);
    return found[0] as FinishedSection;
  }
}

const T0 = Date.UTC(2024, 4, 1, 12);
const EMPTY_STATS = { streams: 0, openSections: 0, heldOrphans: 0, pendingRecords: 0, finishedSeqNums: 0 };

function setup(now = T0 + 3_600_000) {
  const sink = new RecordingSink();
  const tracker = new SectionTracker({ sink, logger: silentLogger(), now: () => now });
  const send = (stream: string, e: Partial<SectionEvent> & Pick<SectionEvent, 'phase' | 'type' | 'seqNum'>) =>
    tracker.onEvent(stream, { event: `${e.phase}_${e.type.toLowerCase()}`, ...e });
  return { sink, tracker, send };
}

/** A small job: suite 1 → task 2 (with pre-task plugin 3) → testcase 4 → section 5 → step 6. */
function runJob(send: ReturnType<typeof setup>['send'], stream = 's1', base = T0) {
  send(stream, { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'job1' });
  send(stream, { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: base });
  send(stream, { phase: 'init', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'Task-1' });
  send(stream, {
    phase: 'start',
    type: 'Plugin',
    seqNum: 3,
    parentSeqNum: 2,
    id: 'pre',
    startTime: base + 10,
  });
  send(stream, {
    phase: 'stop',
    type: 'Plugin',
    seqNum: 3,
    parentSeqNum: 2,
    id: 'pre',
    startTime: base + 10,
    stopTime: base + 20,
    runtime: 0.01,
    result: { value: 'passed' },
  });
  send(stream, {
    phase: 'start',
    type: 'Task',
    seqNum: 2,
    parentSeqNum: 1,
    id: 'Task-1',
    startTime: base + 30,
  });
  send(stream, {
    phase: 'start',
    type: 'Testcase',
    seqNum: 4,
    parentSeqNum: 2,
    id: 'tc_bgp',
    startTime: base + 40,
  });
  send(stream, {
    phase: 'start',
    type: 'TestSection',
    seqNum: 5,
    parentSeqNum: 4,
    id: 'check',
    startTime: base + 50,
  });
  send(stream, {
    phase: 'start',
    type: 'Step',
    seqNum: 6,
    parentSeqNum: 5,
    id: 'step1',
    startTime: base + 60,
  });
  send(stream, {
    phase: 'stop',
    type: 'Step',
    seqNum: 6,
    parentSeqNum: 5,
    id: 'step1',
    startTime: base + 60,
    stopTime: base + 70,
    runtime: 0.01,
    result: { value: 'failed', reason: 'down' },
  });
  send(stream, {
    phase: 'stop',
    type: 'TestSection',
    seqNum: 5,
    parentSeqNum: 4,
    stopTime: base + 80,
    runtime: 0.03,
    result: { value: 'failed' },
  });
  send(stream, {
    phase: 'stop',
    type: 'Testcase',
    seqNum: 4,
    parentSeqNum: 2,
    stopTime: base + 90,
    runtime: 0.05,
    result: { value: 'failed' },
  });
  send(stream, {
    phase: 'stop',
    type: 'Task',
    seqNum: 2,
    parentSeqNum: 1,
    stopTime: base + 100,
    runtime: 0.07,
    result: { value: 'failed' },
  });
  send(stream, {
    phase: 'stop',
    type: 'TestSuite',
    seqNum: 1,
    stopTime: base + 110,
    runtime: 0.11,
    result: { value: 'failed' },
  });
}

describe('SectionTracker', () => {
  it('pairs events into one finished section per seq_num with parents, task and testcase', () => {
    const { sink, send, tracker } = setup();
    runJob(send);
    expect(sink.finished.map((s) => s.seqNum).sort()).toEqual([1, 2, 3, 4, 5, 6]);
    const runId = `job1@${new Date(T0).toISOString()}`;
    const traceId = traceIdFor(runId);
    for (const s of sink.finished) {
      expect(s.job).toEqual({ jobId: 'job1', jobName: 'job1', runId, traceId });
      expect(s.spanId).toBe(spanIdFor(runId, s.seqNum));
      expect(s.incomplete).toBe(false);
      expect(s.orphan).toBe(false);
      if (s.seqNum === 1) expect(s.parentSpanId).toBeUndefined();
      else expect(s.parentSpanId).toBe(spanIdFor(runId, s.parentSeqNum as number));
    }
    const step = sink.bySeq(6);
    expect(step).toMatchObject({
      task: 'Task-1',
      testcase: 'tc_bgp',
      startTime: T0 + 60,
      stopTime: T0 + 70,
      result: { value: 'failed', reason: 'down' },
    });
    // Section 5's stop carried no start time: it comes from its start event.
    expect(sink.bySeq(5)).toMatchObject({
      startTime: T0 + 50,
      stopTime: T0 + 80,
      id: 'check',
      type: 'TestSection',
    });
    expect(sink.bySeq(3)).toMatchObject({ task: 'Task-1', type: 'Plugin' });
    expect(sink.bySeq(2).task).toBe('Task-1');
    expect(sink.bySeq(1).task).toBe('none');
    expect(sink.jobs).toHaveLength(1);
    expect(sink.jobs[0]).toMatchObject({
      result: 'failed',
      incomplete: false,
      startTime: T0,
      stopTime: T0 + 110,
    });
    expect(sink.jobs[0]?.counts.failed).toBe(1);
    expect(sink.started.map((s) => s.seqNum)).toEqual([1, 3, 2, 4, 5, 6]);
    expect(tracker.stats().openSections).toBe(0);
  });

  it('holds sections that finish before the suite starts (pre-job plugin) until its start time is known', () => {
    const { sink, send } = setup();
    send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'job1' });
    send('s', { phase: 'start', type: 'Plugin', seqNum: 2, parentSeqNum: 1, startTime: T0 - 100 });
    send('s', {
      phase: 'stop',
      type: 'Plugin',
      seqNum: 2,
      parentSeqNum: 1,
      stopTime: T0 - 50,
      result: { value: 'passed' },
    });
    expect(sink.finished).toHaveLength(0);
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    expect(sink.finished).toHaveLength(1);
    expect(sink.finished[0]?.job.runId).toBe(`job1@${new Date(T0).toISOString()}`);
  });

  it('gives the same ids when the same job is seen again (backfill) and new ids for a new run', () => {
    const a = setup();
    runJob(a.send);
    const b = setup();
    runJob(b.send, 'other-stream');
    expect(b.sink.finished.map((s) => s.spanId).sort()).toEqual(a.sink.finished.map((s) => s.spanId).sort());
    const c = setup();
    runJob(c.send, 's1', T0 + 86_400_000);
    expect(c.sink.finished[0]?.job.traceId).not.toBe(a.sink.finished[0]?.job.traceId);
  });

  it('builds a complete section from a stop without a start (attached mid-job)', () => {
    const { sink, send, tracker } = setup();
    send('s', {
      phase: 'stop',
      type: 'TestSection',
      seqNum: 9,
      parentSeqNum: 8,
      startTime: T0,
      stopTime: T0 + 500,
      runtime: 0.5,
      result: { value: 'passed' },
    });
    send('s', {
      phase: 'stop',
      type: 'Step',
      seqNum: 11,
      parentSeqNum: 10,
      stopTime: T0 + 900,
      runtime: 0.25,
      result: { value: 'passx' },
    });
    // Their parents were never seen: held until they are, or until the stream ends.
    expect(sink.finished).toHaveLength(0);
    expect(tracker.stats().heldOrphans).toBe(2);
    tracker.endStream('s');
    expect(sink.bySeq(9)).toMatchObject({
      startTime: T0,
      stopTime: T0 + 500,
      orphan: true,
      started: false,
      task: 'unknown',
      parentSeqNum: 8,
    });
    // No root was ever seen: no parent link at all rather than a link to a span that does not exist.
    expect(sink.bySeq(9).parentSpanId).toBeUndefined();
    expect(sink.bySeq(11)).toMatchObject({ startTime: T0 + 650, stopTime: T0 + 900, runtime: 0.25 });
    expect(sink.bySeq(11).parentSpanId).toBeUndefined();
    expect(sink.started).toHaveLength(0);
    expect(sink.jobs).toHaveLength(1);
    expect(sink.jobs[0]?.job.jobId).toBe('unknown');
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('is idempotent for repeated events and handles a stop before its start', () => {
    const { sink, send } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'j', startTime: T0 });
    const stop = {
      phase: 'stop' as const,
      type: 'Testcase',
      seqNum: 2,
      parentSeqNum: 1,
      startTime: T0 + 1,
      stopTime: T0 + 2,
      result: { value: 'passed' as const },
    };
    send('s', stop);
    send('s', stop);
    send('s', { phase: 'start', type: 'Testcase', seqNum: 2, parentSeqNum: 1, startTime: T0 + 1 });
    send('s', { phase: 'start', type: 'Testcase', seqNum: 3, parentSeqNum: 1, startTime: T0 + 3 });
    send('s', { phase: 'start', type: 'Testcase', seqNum: 3, parentSeqNum: 1, startTime: T0 + 3 });
    expect(sink.finished.filter((s) => s.seqNum === 2)).toHaveLength(1);
    expect(sink.started.filter((s) => s.seqNum === 3)).toHaveLength(1);
  });

  it('abandons open sections when the stream ends, children first, and releases the job', () => {
    const now = T0 + 10_000;
    const { sink, send, tracker } = setup(now);
    send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'killed' });
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'killed', startTime: T0 });
    send('s', { phase: 'init', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'Task-1' });
    send('s', { phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'Task-1', startTime: T0 + 1 });
    send('s', { phase: 'start', type: 'Testcase', seqNum: 3, parentSeqNum: 2, id: 'tc', startTime: T0 + 2 });
    expect(tracker.stats()).toMatchObject({ streams: 1, openSections: 3 });
    tracker.endStream('s');
    expect(sink.finished.map((s) => s.seqNum)).toEqual([3, 2, 1]);
    for (const s of sink.finished) {
      expect(s).toMatchObject({
        incomplete: true,
        result: { value: 'aborted' },
        stopTime: now,
        started: true,
      });
    }
    expect(sink.jobs).toEqual([
      expect.objectContaining({
        result: 'aborted',
        incomplete: true,
        counts: expect.objectContaining({ aborted: 1 }),
      }),
    ]);
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('starts a new job (new trace) when a new TestSuite follows a finished one on the same stream', () => {
    const { sink, send } = setup();
    runJob(send, 's');
    runJob(send, 's', T0 + 60_000);
    expect(sink.jobs).toHaveLength(2);
    const traces = new Set(sink.finished.map((s) => s.job.traceId));
    expect(traces.size).toBe(2);
  });

  it('keeps streams apart', () => {
    const { sink, send } = setup();
    send('a', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'ja', startTime: T0 });
    send('b', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'jb', startTime: T0 });
    send('a', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      id: 'ja',
      stopTime: T0 + 1,
      result: { value: 'passed' },
    });
    expect(sink.finished).toHaveLength(1);
    expect(sink.finished[0]?.job.jobId).toBe('ja');
  });
});

describe('SectionTracker faults', () => {
  const runIdOf = (id: string, start: number) => `${id}@${new Date(start).toISOString()}`;
  const stopOf = (
    seqNum: number,
    parentSeqNum: number | undefined,
    type: string,
    at: number,
    value: 'passed' | 'failed' = 'passed',
  ): Partial<SectionEvent> & Pick<SectionEvent, 'phase' | 'type' | 'seqNum'> => ({
    phase: 'stop',
    type,
    seqNum,
    ...(parentSeqNum === undefined ? {} : { parentSeqNum }),
    id: `${type.toLowerCase()}_${seqNum}`,
    startTime: at - 10,
    stopTime: at,
    result: { value },
  });

  it('keeps the deterministic link of a held orphan once its parent stops, with its task and testcase', () => {
    const { sink, send, tracker } = setup();
    // Attached mid-job: the step and section stop before anything of their testcase or task was seen.
    send('s', stopOf(6, 5, 'Step', T0 + 60));
    send('s', stopOf(5, 4, 'TestSection', T0 + 80));
    expect(sink.finished.map((s) => s.seqNum)).toEqual([6]);
    send('s', { ...stopOf(4, 2, 'Testcase', T0 + 90), id: 'tc_bgp' });
    send('s', { ...stopOf(2, 1, 'Task', T0 + 100), id: 'Task-1' });
    expect(sink.finished.map((s) => s.seqNum)).toEqual([6, 5, 4]);
    send('s', { ...stopOf(1, undefined, 'TestSuite', T0 + 110), id: 'job1', startTime: T0 });
    expect(sink.finished.map((s) => s.seqNum)).toEqual([6, 5, 4, 1, 2]);
    const runId = sink.bySeq(1).job.runId;
    for (const s of sink.finished) {
      expect(s.orphan, `orphan flag of ${s.seqNum}`).toBe(false);
      if (s.parentSeqNum !== undefined) expect(s.parentSpanId).toBe(spanIdFor(runId, s.parentSeqNum));
    }
    expect(sink.bySeq(5)).toMatchObject({ testcase: 'tc_bgp' });
    expect(sink.bySeq(4)).toMatchObject({ task: 'Task-1', testcase: 'tc_bgp' });
    expect(sink.jobs).toHaveLength(1);
    tracker.endStream('s');
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('re-parents a section whose parent never came to the job root, flagged orphan', () => {
    const { sink, send, tracker } = setup();
    send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'job1' });
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    // Section 3's parent (2) was lost (e.g. rejected as malformed) and never shows up.
    send('s', stopOf(3, 2, 'Testcase', T0 + 50));
    send('s', { phase: 'start', type: 'Testcase', seqNum: 4, parentSeqNum: 2, startTime: T0 + 60 });
    expect(sink.finished).toHaveLength(0);
    tracker.endStream('s');
    const runId = runIdOf('job1', T0);
    const rootSpan = spanIdFor(runId, 1);
    expect(sink.bySeq(3)).toMatchObject({ orphan: true, parentSeqNum: 2, parentSpanId: rootSpan });
    // Abandoned while its parent was unseen: re-parented the same way.
    expect(sink.bySeq(4)).toMatchObject({ orphan: true, incomplete: true, parentSpanId: rootSpan });
    expect(sink.bySeq(1)).toMatchObject({ orphan: false, incomplete: true });
    expect(sink.bySeq(1).parentSpanId).toBeUndefined();
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('resolves held orphans when the suite stops, before the job summary', () => {
    const { sink, send, tracker } = setup();
    const order: string[] = [];
    const original = { finished: sink.sectionFinished.bind(sink), job: sink.jobFinished.bind(sink) };
    sink.sectionFinished = (s) => {
      order.push(`section ${s.seqNum}`);
      original.finished(s);
    };
    sink.jobFinished = (j) => {
      order.push('job');
      original.job(j);
    };
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    send('s', stopOf(7, 6, 'Step', T0 + 5));
    send('s', stopOf(1, undefined, 'TestSuite', T0 + 10));
    expect(order).toEqual(['section 1', 'section 7', 'job']);
    expect(sink.bySeq(7).parentSpanId).toBe(spanIdFor(runIdOf('job1', T0), 1));
    expect(tracker.stats().heldOrphans).toBe(0);
  });

  it('bounds the orphans it holds: the oldest goes out with its deterministic link, flagged', () => {
    const sink = new RecordingSink();
    const tracker = new SectionTracker({ sink, logger: silentLogger(), now: () => T0, maxHeldOrphans: 2 });
    const send = (e: Partial<SectionEvent> & Pick<SectionEvent, 'phase' | 'type' | 'seqNum'>) =>
      tracker.onEvent('s', { event: `${e.phase}_x`, ...e });
    send(stopOf(10, 100, 'Step', T0 + 1));
    send(stopOf(11, 100, 'Step', T0 + 2));
    send(stopOf(12, 101, 'Step', T0 + 3));
    expect(sink.finished.map((s) => s.seqNum)).toEqual([10]);
    expect(sink.bySeq(10)).toMatchObject({ orphan: true });
    const runId = sink.bySeq(10).job.runId;
    expect(sink.bySeq(10).parentSpanId).toBe(spanIdFor(runId, 100));
    expect(tracker.stats().heldOrphans).toBe(2);
    send(stopOf(100, undefined, 'Testcase', T0 + 5));
    expect(sink.bySeq(11)).toMatchObject({ orphan: false, parentSpanId: spanIdFor(runId, 100) });
    tracker.endStream('s');
    expect(sink.bySeq(12)).toMatchObject({ orphan: true });
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('never links a section to itself', () => {
    const { sink, send, tracker } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    send('s', stopOf(5, 5, 'Testcase', T0 + 5));
    tracker.endStream('s');
    expect(sink.bySeq(5)).toMatchObject({ orphan: true, parentSpanId: spanIdFor(runIdOf('job1', T0), 1) });
    // Without a root to fall back on: no parent at all, whether released at the end or evicted.
    for (const maxHeldOrphans of [10, 0]) {
      const alone = new RecordingSink();
      const t = new SectionTracker({ sink: alone, logger: silentLogger(), now: () => T0, maxHeldOrphans });
      t.onEvent('s', { event: 'stop_section', ...stopOf(7, 7, 'Step', T0 + 5) });
      t.endStream('s');
      expect(alone.bySeq(7)).toMatchObject({ orphan: true });
      expect(alone.bySeq(7).parentSpanId).toBeUndefined();
    }
  });

  it('refuses a parent link that would close a cycle', () => {
    const { sink, send, tracker } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    // 3 names 4 as parent and 4 names 3: whichever finishes second would close the loop.
    send('s', { phase: 'start', type: 'Testcase', seqNum: 3, parentSeqNum: 4, startTime: T0 + 1 });
    send('s', { phase: 'start', type: 'TestSection', seqNum: 4, parentSeqNum: 3, startTime: T0 + 2 });
    send('s', stopOf(4, 3, 'TestSection', T0 + 3));
    send('s', stopOf(3, 4, 'Testcase', T0 + 4));
    // A longer loop through held sections: 7 → 6 → 5 → 7.
    send('s', stopOf(7, 6, 'Step', T0 + 5));
    send('s', stopOf(6, 5, 'Step', T0 + 6));
    send('s', stopOf(5, 7, 'Step', T0 + 7));
    tracker.endStream('s');
    const parentOf = new Map(sink.finished.map((s) => [s.spanId, s.parentSpanId]));
    for (const section of sink.finished) {
      const seen = new Set<string>();
      for (let id: string | undefined = section.spanId; id !== undefined; id = parentOf.get(id)) {
        expect(seen.has(id), `loop through seq ${section.seqNum}`).toBe(false);
        seen.add(id);
      }
    }
    // 3 and 4 each name the other (known from their starts): neither link is kept. 5 closes the longer loop.
    expect(sink.finished.filter((s) => s.orphan).map((s) => s.seqNum)).toEqual([4, 3, 5]);
    expect(sink.bySeq(6).parentSpanId).toBe(sink.bySeq(5).spanId);
    expect(sink.bySeq(7).parentSpanId).toBe(sink.bySeq(6).spanId);
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('remembers finished seq_nums of any size: 0, dense, far beyond the dense table, with far parents', () => {
    const { sink, send, tracker } = setup();
    const huge = 2 ** 40;
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 0, id: 'job1', startTime: T0 });
    const stops = [
      stopOf(5_000, 0, 'Testcase', T0 + 1),
      stopOf(huge + 1, huge, 'Step', T0 + 2),
      stopOf(huge, 5_000, 'Testcase', T0 + 3),
      // A loop in the sparse range: the first waits for its parent, which names it as parent in turn.
      stopOf(huge + 4, huge + 3, 'Step', T0 + 4),
      stopOf(huge + 3, huge + 4, 'Step', T0 + 5),
    ];
    for (const stop of stops) send('s', stop);
    for (const stop of stops) send('s', stop);
    send('s', { phase: 'start', type: 'Step', seqNum: huge, parentSeqNum: 5_000, startTime: T0 + 9 });
    // A small seq_num whose parent is outside the dense range: remembered all the same.
    const farChild = stopOf(7, huge, 'Step', T0 + 9);
    send('s', farChild);
    send('s', farChild);
    expect(sink.finished.filter((s) => s.seqNum === 7)).toHaveLength(1);
    expect(sink.bySeq(7).parentSpanId).toBe(sink.bySeq(huge).spanId);
    sink.finished.splice(sink.finished.indexOf(sink.bySeq(7)), 1);
    expect(sink.finished.map((s) => s.seqNum)).toEqual([5_000, huge, huge + 1, huge + 3, huge + 4]);
    expect(sink.bySeq(huge + 1).parentSpanId).toBe(sink.bySeq(huge).spanId);
    expect(sink.bySeq(huge).parentSpanId).toBe(sink.bySeq(5_000).spanId);
    expect(sink.bySeq(huge + 3)).toMatchObject({
      orphan: true,
      parentSpanId: spanIdFor(sink.bySeq(5_000).job.runId, 0),
    });
    expect(sink.bySeq(huge + 4).parentSpanId).toBe(sink.bySeq(huge + 3).spanId);
    expect(tracker.stats().finishedSeqNums).toBe(6);
    send('s', stopOf(0, undefined, 'TestSuite', T0 + 10));
    send('s', stopOf(0, undefined, 'TestSuite', T0 + 10));
    expect(sink.jobs).toHaveLength(1);
    expect(sink.finished).toHaveLength(6);
  });

  it('refuses to open more sections than the cap on one stream, and only that', () => {
    const sink = new RecordingSink();
    const tracker = new SectionTracker({ sink, logger: silentLogger(), maxOpenSections: 3 });
    const start = (stream: string, seqNum: number, phase: 'init' | 'start' = 'start'): SectionEvent => ({
      phase,
      event: `${phase}_section`,
      type: seqNum === 1 ? 'TestSuite' : 'TestSection',
      seqNum,
      ...(seqNum === 1 ? { id: 'job' } : { parentSeqNum: 1 }),
      startTime: T0 + seqNum,
    });
    for (const seq of [1, 2, 3]) expect(tracker.onEvent('s', start('s', seq))).toBeUndefined();
    expect(tracker.onEvent('s', start('s', 4))).toBe('too_many_open_sections');
    expect(tracker.onEvent('s', start('s', 5, 'init'))).toBe('too_many_open_sections');
    // Events of sections already open, a stop of one never seen, and other streams are not affected.
    expect(tracker.onEvent('s', start('s', 2))).toBeUndefined();
    const stop = (seqNum: number, at: number) =>
      ({ event: 'stop_section', ...stopOf(seqNum, 1, 'TestSection', at) }) as SectionEvent;
    expect(tracker.onEvent('s', stop(6, T0 + 6))).toBeUndefined();
    expect(tracker.onEvent('t', start('t', 4))).toBeUndefined();
    expect(tracker.onEvent('s', stop(3, T0 + 7))).toBeUndefined();
    expect(tracker.onEvent('s', start('s', 4))).toBeUndefined();
    expect(tracker.stats().openSections).toBe(4);
    tracker.endAll();
    expect(sink.finished.map((s) => s.seqNum).sort()).toEqual([1, 2, 3, 4, 4, 6]);
  });

  it('sends starts seen before the suite started with the final run id', () => {
    const { sink, send } = setup();
    runJob(send);
    const runId = runIdOf('job1', T0);
    expect(sink.started.length).toBeGreaterThan(0);
    for (const s of sink.started) expect(s.job.runId).toBe(runId);
    // The pre-job plugin starts and stops before the suite's start time (part of the run id) is known.
    const pre = setup();
    pre.send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'job1' });
    pre.send('s', { phase: 'start', type: 'Plugin', seqNum: 2, parentSeqNum: 1, startTime: T0 - 100 });
    expect(pre.sink.started).toHaveLength(0);
    expect(pre.tracker.stats().pendingRecords).toBe(1);
    pre.send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    expect(pre.sink.started.map((s) => [s.seqNum, s.job.runId])).toEqual([
      [2, runId],
      [1, runId],
    ]);
  });

  it('ignores every event of a job replayed on the same stream', () => {
    const { sink, send, tracker } = setup();
    runJob(send, 's');
    const finished = sink.finished.length;
    const started = sink.started.length;
    runJob(send, 's');
    expect(sink.finished).toHaveLength(finished);
    expect(sink.started).toHaveLength(started);
    expect(sink.jobs).toHaveLength(1);
    tracker.endStream('s');
    expect(sink.jobs).toHaveLength(1);
    expect(sink.finished).toHaveLength(finished);
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('ignores repeated suite events after the job finished (no phantom job)', () => {
    const { sink, send, tracker } = setup();
    runJob(send, 's');
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    send('s', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      id: 'job1',
      stopTime: T0 + 110,
      result: { value: 'failed' },
    });
    send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'job1' });
    tracker.endStream('s');
    expect(sink.jobs).toHaveLength(1);
    expect(sink.finished).toHaveLength(6);
    expect(sink.finished.filter((s) => s.incomplete)).toHaveLength(0);
  });

  it('ends a job left open when another TestSuite starts on the stream, and keeps the two apart', () => {
    const { sink, send, tracker } = setup(T0 + 1000);
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'first', startTime: T0 });
    send('s', { phase: 'start', type: 'Testcase', seqNum: 2, parentSeqNum: 1, id: 'tc', startTime: T0 + 1 });
    // The first job's source went away without a stop; another job starts with seq_nums from 1 again.
    send('s', { phase: 'init', type: 'TestSuite', seqNum: 1, id: 'second' });
    expect(sink.finished.map((s) => [s.seqNum, s.job.jobId, s.incomplete])).toEqual([
      [2, 'first', true],
      [1, 'first', true],
    ]);
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'second', startTime: T0 + 500 });
    send('s', stopOf(2, 1, 'Testcase', T0 + 600));
    send('s', stopOf(1, undefined, 'TestSuite', T0 + 700));
    expect(sink.jobs.map((j) => [j.job.jobId, j.incomplete])).toEqual([
      ['first', true],
      ['second', false],
    ]);
    const second = sink.finished.filter((s) => s.job.jobId === 'second');
    expect(second.map((s) => s.seqNum)).toEqual([2, 1]);
    expect(new Set(second.map((s) => s.job.traceId)).size).toBe(1);
    expect(second[0]?.job.traceId).not.toBe(sink.finished[0]?.job.traceId);
    tracker.endStream('s');
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('treats a restarted suite (same seq_num, new start time) as a new run', () => {
    const { sink, send } = setup(T0 + 1000);
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 });
    expect(sink.finished).toHaveLength(0);
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: T0 + 500 });
    expect(sink.finished).toHaveLength(1);
    expect(sink.finished[0]).toMatchObject({ incomplete: true, job: { runId: runIdOf('job1', T0) } });
    expect(sink.started.map((s) => s.job.runId)).toEqual([runIdOf('job1', T0), runIdOf('job1', T0 + 500)]);
  });

  it('never emits a span or a job twice when runs come back after other runs on the same stream', () => {
    const { sink, send, tracker } = setup(T0 + 1000);
    const suite = (start: number) =>
      send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: start });
    // Run A is cut by run B, B by a finished run C, then A, B and C come back (as a corrupt or replayed
    // stream does): the first A, B and C were ended, so their returns are replays.
    suite(T0);
    send('s', { phase: 'start', type: 'Testcase', seqNum: 2, parentSeqNum: 1, id: 'tc', startTime: T0 + 1 });
    suite(T0 + 100);
    runJob(send, 's', T0 + 200);
    for (const start of [T0, T0 + 100, T0 + 200, T0]) {
      suite(start);
      send('s', stopOf(2, 1, 'Testcase', start + 50));
    }
    tracker.endStream('s');
    const spans = sink.finished.map((s) => `${s.job.runId}/${s.spanId}`);
    expect(new Set(spans).size).toBe(spans.length);
    expect(sink.jobs.map((j) => j.job.runId)).toEqual([
      runIdOf('job1', T0),
      runIdOf('job1', T0 + 100),
      runIdOf('job1', T0 + 200),
    ]);
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('remembers only the newest ended run when the runs before it are huge', () => {
    const { sink, send, tracker } = setup(T0 + 1000);
    const run = (start: number, sections: number) => {
      send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job1', startTime: start });
      for (let seq = 2; seq < sections + 2; seq++) send('s', stopOf(seq, 1, 'Testcase', start + 1));
    };
    // 150,000 finished seq_nums each: A and B together pass the budget, so once C starts only B is kept.
    run(T0, 150_000);
    run(T0 + 100, 150_000);
    run(T0 + 200, 1);
    const spansOf = (start: number) =>
      sink.finished.filter((s) => s.seqNum === 2 && s.job.runId === runIdOf('job1', start)).length;
    run(T0 + 100, 1);
    expect(spansOf(T0 + 100)).toBe(1);
    run(T0, 1);
    expect(spansOf(T0)).toBe(2);
    tracker.endStream('s');
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });

  it('releases everything of every stream on endAll', () => {
    const { send, tracker } = setup();
    for (const stream of ['a', 'b', 'c']) {
      send(stream, { phase: 'start', type: 'TestSuite', seqNum: 1, id: stream, startTime: T0 });
      send(stream, stopOf(9, 8, 'Step', T0 + 5));
      send(stream, { phase: 'init', type: 'Task', seqNum: 2, parentSeqNum: 1 });
    }
    expect(tracker.stats()).toMatchObject({ streams: 3, openSections: 6, heldOrphans: 3 });
    tracker.endAll();
    expect(tracker.stats()).toEqual(EMPTY_STATS);
  });
});

/**
 * The 48 events of the real pyATS 23.2 example job (/tmp/realpyats-notes/events.txt, example/job.py of
 * ../shared/real-pyats), as the normalizer makes them: what each carries, in the order the reporter sent it.
 * stop_task and stop_testsuite carry no result.
 */
function realExampleJob(base = T0): SectionEvent[] {
  const RUN = 'job.2026Dec02_16:18:03.912790';
  const events: SectionEvent[] = [];
  let clock = base;
  const starts = new Map<number, number>();
  const paths = new Map<number, string>();
  const add = (
    phase: 'init' | 'start' | 'stop',
    seqNum: number,
    parentSeqNum: number | undefined,
    type: string,
    id: string,
    name: string,
    result?: SectionEvent['result'],
  ) => {
    clock += 1;
    const fullid = seqNum === 1 || type === 'Task' ? id : `${paths.get(parentSeqNum as number)}.${id}`;
    paths.set(seqNum, fullid);
    const suffix = type === 'TestSuite' ? 'testsuite' : type === 'Task' ? 'task' : 'section';
    const event: SectionEvent = { phase, event: `${phase}_${suffix}`, type, seqNum, id, fullid, name };
    if (parentSeqNum !== undefined) event.parentSeqNum = parentSeqNum;
    if (phase === 'start') starts.set(seqNum, clock);
    if (phase === 'stop') {
      event.startTime = starts.get(seqNum) as number;
      event.stopTime = clock;
      event.runtime = (clock - event.startTime) / 1000;
      if (result !== undefined) event.result = result;
    } else if (phase === 'start') {
      event.startTime = clock;
    }
    events.push(event);
  };
  const section = (seqNum: number, parent: number, type: string, id: string, name = id) => ({
    start: () => add('start', seqNum, parent, type, id, name),
    stop: (value: SectionEvent['result']) => add('stop', seqNum, parent, type, id, name, value),
  });
  const passed = { value: 'passed' as const };
  add('init', 1, undefined, 'TestSuite', RUN, RUN);
  add('start', 1, undefined, 'TestSuite', RUN, 'job');
  add('init', 2, 1, 'Task', 'ExampleTask', 'ExampleTask');
  add('start', 2, 1, 'Task', 'ExampleTask', 'script');
  const setup = section(3, 2, 'CommonSetup', 'common_setup');
  const connect = section(4, 3, 'Subsection', 'connect');
  setup.start();
  connect.start();
  connect.stop(passed);
  setup.stop(passed);
  const tcPass = section(5, 2, 'Testcase', 'TcPass');
  tcPass.start();
  const tcSetup = section(6, 5, 'SetupSection', 'setup');
  tcSetup.start();
  tcSetup.stop(passed);
  const steps = section(7, 5, 'TestSection', 'test_steps');
  steps.start();
  const step1 = section(8, 7, 'Step', 'STEP 1', 'step one');
  const step11 = section(9, 8, 'Step', 'STEP 1.1', 'nested step');
  const step2 = section(10, 7, 'Step', 'STEP 2', 'step two');
  step1.start();
  step11.start();
  step11.stop({ value: 'passed', reason: 'nested ok' });
  step1.stop(passed);
  step2.start();
  step2.stop({ value: 'failed', reason: 'step two failed on purpose' });
  steps.stop({ value: 'failed' });
  const cleanup = section(11, 5, 'CleanupSection', 'cleanup');
  cleanup.start();
  cleanup.stop(passed);
  tcPass.stop({ value: 'failed' });
  const testcases: Array<[number, string, SectionEvent['result']]> = [
    [12, 'TcOk', { value: 'passed', reason: 'all good' }],
    [14, 'TcSkip', { value: 'skipped', reason: 'not applicable' }],
    [16, 'TcError', { value: 'errored', reason: 'Caught an exception while executing section t' }],
    [18, 'TcBlocked', { value: 'blocked', reason: 'blocked on purpose' }],
    [20, 'TcAborted', { value: 'aborted', reason: 'aborted on purpose' }],
  ];
  for (const [seqNum, id, result] of testcases) {
    const testcase = section(seqNum, 2, 'Testcase', id);
    const t = section(seqNum + 1, seqNum, 'TestSection', 't');
    testcase.start();
    t.start();
    t.stop(result);
    testcase.stop({ value: result?.value ?? 'passed' });
  }
  const commonCleanup = section(22, 2, 'CommonCleanup', 'common_cleanup');
  const disconnect = section(23, 22, 'Subsection', 'disconnect');
  commonCleanup.start();
  disconnect.start();
  disconnect.stop({ value: 'passx', reason: 'known issue' });
  commonCleanup.stop({ value: 'passx' });
  add('stop', 2, 1, 'Task', 'ExampleTask', 'script');
  add('stop', 1, undefined, 'TestSuite', RUN, 'job');
  return events;
}

describe('SectionTracker with a real pyATS 23.2 job', () => {
  const RUN = 'job.2026Dec02_16:18:03.912790';

  it('rolls the Task and TestSuite results up from their children when their stops carry none', () => {
    const { sink, send, tracker } = setup();
    const events = realExampleJob();
    expect(events).toHaveLength(48);
    expect(events.filter((e) => e.phase === 'stop' && e.result === undefined).map((e) => e.event)).toEqual([
      'stop_task',
      'stop_testsuite',
    ]);
    for (const event of events) send('s', event);
    // TcAborted makes the Task and the job `aborted` (anything + Aborted is Aborted), no stop `errored`.
    expect(sink.bySeq(2).result).toEqual({ value: 'aborted' });
    expect(sink.bySeq(1).result).toEqual({ value: 'aborted' });
    expect(sink.bySeq(5).result).toEqual({ value: 'failed' });
    expect(sink.bySeq(10).result).toEqual({ value: 'failed', reason: 'step two failed on purpose' });
    expect(sink.finished.filter((s) => s.result.reason === 'stop event carried no result')).toEqual([]);
    expect(sink.jobs).toHaveLength(1);
    expect(sink.jobs[0]).toMatchObject({ result: 'aborted', incomplete: false });
    expect(sink.jobs[0]?.counts).toEqual({
      passed: 2,
      failed: 1,
      aborted: 1,
      blocked: 1,
      skipped: 1,
      errored: 1,
      passx: 1,
    });
    expect(tracker.stats().openSections).toBe(0);
  });

  it('takes each roll-up step of pyATS: the worst finished child wins', () => {
    const cases: Array<
      [Array<'passed' | 'failed' | 'aborted' | 'blocked' | 'skipped' | 'errored' | 'passx'>, string]
    > = [
      [['skipped', 'passed'], 'passed'],
      [['passed', 'passx'], 'passx'],
      [['passx', 'blocked'], 'blocked'],
      [['blocked', 'failed'], 'failed'],
      [['errored', 'failed'], 'errored'],
      [['aborted', 'errored', 'passed'], 'aborted'],
      [['skipped'], 'skipped'],
    ];
    for (const [children, expected] of cases) {
      const { sink, send } = setup();
      send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'j', startTime: T0 });
      send('s', { phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'T', startTime: T0 + 1 });
      children.forEach((value, i) => {
        const seqNum = 3 + i;
        send('s', { phase: 'start', type: 'Testcase', seqNum, parentSeqNum: 2, startTime: T0 + 2 });
        send('s', {
          phase: 'stop',
          type: 'Testcase',
          seqNum,
          parentSeqNum: 2,
          stopTime: T0 + 3,
          result: { value },
        });
      });
      send('s', { phase: 'stop', type: 'Task', seqNum: 2, parentSeqNum: 1, stopTime: T0 + 4 });
      send('s', { phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 5 });
      expect(sink.bySeq(2).result.value, children.join(' + ')).toBe(expected);
      expect(sink.bySeq(1).result.value, children.join(' + ')).toBe(expected);
      expect(sink.jobs[0]?.result).toBe(expected);
    }
  });

  it('keeps its own result when the stop carries one, and errored when there is neither', () => {
    const { sink, send } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'j', startTime: T0 });
    send('s', { phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'T', startTime: T0 + 1 });
    send('s', {
      phase: 'stop',
      type: 'Testcase',
      seqNum: 3,
      parentSeqNum: 2,
      stopTime: T0 + 2,
      result: { value: 'failed' },
    });
    send('s', {
      phase: 'stop',
      type: 'Task',
      seqNum: 2,
      parentSeqNum: 1,
      stopTime: T0 + 3,
      result: { value: 'passx' },
    });
    // An empty Task: nothing to roll up.
    send('s', { phase: 'start', type: 'Task', seqNum: 4, parentSeqNum: 1, id: 'Empty', startTime: T0 + 4 });
    send('s', { phase: 'stop', type: 'Task', seqNum: 4, parentSeqNum: 1, stopTime: T0 + 5 });
    send('s', { phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 6 });
    expect(sink.bySeq(2).result).toEqual({ value: 'passx' });
    expect(sink.bySeq(4).result).toEqual({ value: 'errored', reason: 'stop event carried no result' });
    // The suite: passx + errored.
    expect(sink.bySeq(1).result).toEqual({ value: 'errored' });
  });

  it('puts a job started by a traced CI run into the CI trace, its root a child of the CI span', () => {
    const { sink, send, tracker } = setup();
    const parent = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true };
    tracker.setStreamContext('ci', { ci: { parent, pipelineName: 'nightly', runId: '311' } });
    send('ci', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job.1', name: 'job', startTime: T0 });
    send('ci', { phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'T', startTime: T0 + 1 });
    send('ci', {
      phase: 'stop',
      type: 'Task',
      seqNum: 2,
      parentSeqNum: 1,
      stopTime: T0 + 2,
      result: { value: 'passed' },
    });
    send('ci', { phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 3 });
    const [task, suite] = [sink.bySeq(2), sink.bySeq(1)];
    expect(suite.job.traceId).toBe(parent.traceId);
    expect(suite.parentSpanId).toBe(parent.spanId);
    expect(task.parentSpanId).toBe(suite.spanId);
    expect(suite.job.ci).toMatchObject({ pipelineName: 'nightly', runId: '311' });
    // Span ids still derive from the run, as without CI.
    expect(suite.spanId).toBe(spanIdFor(suite.job.runId, 1));
    // Another stream (no context) keeps its own trace and a root without parent.
    send('plain', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job.2', name: 'job', startTime: T0 });
    send('plain', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      stopTime: T0 + 3,
      result: { value: 'passed' },
    });
    const plain = sink.finished.filter((s) => s.job.jobId === 'job.2')[0]!;
    expect(plain.job.traceId).toBe(traceIdFor(plain.job.runId));
    expect(plain.parentSpanId).toBeUndefined();
  });

  it('takes the CI context that comes after the suite started, until the first span has gone out', () => {
    const { sink, send, tracker } = setup();
    const parent = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true };
    // pyATS starts the TestSuite before easypy writes env.txt.
    send('late', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job.1', name: 'job', startTime: T0 });
    tracker.setStreamContext('late', { ci: { parent } });
    send('late', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      stopTime: T0 + 3,
      result: { value: 'passed' },
    });
    expect(sink.bySeq(1).job.traceId).toBe(parent.traceId);
    expect(sink.bySeq(1).parentSpanId).toBe(parent.spanId);
    // Too late: a span of the job is out with its own trace id, which stays.
    send('later', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job.2', name: 'job', startTime: T0 });
    send('later', {
      phase: 'stop',
      type: 'Testcase',
      seqNum: 2,
      parentSeqNum: 1,
      stopTime: T0 + 1,
      result: { value: 'passed' },
    });
    tracker.setStreamContext('later', { ci: { parent } });
    send('later', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      stopTime: T0 + 3,
      result: { value: 'passed' },
    });
    const later = sink.finished.filter((s) => s.job.jobId === 'job.2');
    expect(new Set(later.map((s) => s.job.traceId)).size).toBe(1);
    expect(later[0]?.job.traceId).not.toBe(parent.traceId);
  });

  it("reads the runinfo's env.txt just before a job's first span, when a poll would come too late", () => {
    const dir = mkdtempSync(join(tmpdir(), 'pyx-runinfo-'));
    try {
      const sink = new RecordingSink();
      const tracker = new SectionTracker({ sink, logger: silentLogger(), readRunContext });
      const send = (e: Partial<SectionEvent> & Pick<SectionEvent, 'phase' | 'type' | 'seqNum'>) =>
        tracker.onEvent('native', { event: `${e.phase}_${e.type.toLowerCase()}`, ...e });
      tracker.setStreamContext('native', { runinfoDir: dir });
      send({ phase: 'start', type: 'TestSuite', seqNum: 1, id: 'job.1', name: 'job', startTime: T0 });
      // Easypy writes env.txt after the suite started and before the first task: no poll has seen it yet.
      writeFileSync(
        join(dir, 'env.txt'),
        'Environment Variables\n=====================\n' +
          'TRACEPARENT : 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n\nPackages\n',
      );
      send({ phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'T', startTime: T0 + 1 });
      send({
        phase: 'stop',
        type: 'Task',
        seqNum: 2,
        parentSeqNum: 1,
        stopTime: T0 + 2,
        result: { value: 'passed' },
      });
      send({ phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 3 });
      expect(sink.finished.map((s) => s.job.traceId)).toEqual([
        '4bf92f3577b34da6a3ce929d0e0e4736',
        '4bf92f3577b34da6a3ce929d0e0e4736',
      ]);
      expect(sink.bySeq(1).parentSpanId).toBe('00f067aa0ba902b7');
      expect(sink.bySeq(1).job.runinfoDir).toBe(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('goes on without a CI context when the runinfo has no env.txt, or a FIFO in its place', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pyx-runinfo-'));
    try {
      for (const [stream, fifo] of [
        ['none', false],
        ['fifo', true],
      ] as const) {
        if (fifo) execFileSync('mkfifo', [join(dir, 'env.txt')]);
        const sink = new RecordingSink();
        const tracker = new SectionTracker({ sink, logger: silentLogger(), readRunContext });
        tracker.setStreamContext(stream, { runinfoDir: dir });
        tracker.onEvent(stream, {
          event: 'start_testsuite',
          phase: 'start',
          type: 'TestSuite',
          seqNum: 1,
          id: 'j',
          startTime: T0,
        });
        tracker.onEvent(stream, {
          event: 'stop_testsuite',
          phase: 'stop',
          type: 'TestSuite',
          seqNum: 1,
          stopTime: T0 + 1,
        });
        const [suite] = sink.finished;
        expect(suite?.job.traceId).toBe(traceIdFor(suite!.job.runId));
        expect(suite?.parentSpanId).toBeUndefined();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not count a section that starts after its job finished as in progress', () => {
    const { sink, send } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'j', startTime: T0 });
    send('s', { phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 5, result: { value: 'passed' } });
    expect(sink.jobs).toHaveLength(1);
    const startedBefore = sink.started.length;
    send('s', { phase: 'start', type: 'Plugin', seqNum: 9, parentSeqNum: 1, id: 'post', startTime: T0 + 6 });
    send('s', {
      phase: 'stop',
      type: 'Plugin',
      seqNum: 9,
      parentSeqNum: 1,
      stopTime: T0 + 7,
      result: { value: 'passed' },
    });
    expect(sink.started).toHaveLength(startedBefore);
    expect(sink.bySeq(9).started).toBe(false);
  });

  it("leaves plugins' results out of the roll-up, as pyATS does (they have a summary of their own)", () => {
    const { sink, send } = setup();
    send('s', { phase: 'start', type: 'TestSuite', seqNum: 1, id: 'j', startTime: T0 });
    send('s', { phase: 'start', type: 'Task', seqNum: 2, parentSeqNum: 1, id: 'T', startTime: T0 + 1 });
    send('s', { phase: 'start', type: 'Plugin', seqNum: 3, parentSeqNum: 2, id: 'P', startTime: T0 + 1 });
    send('s', {
      phase: 'stop',
      type: 'Plugin',
      seqNum: 3,
      parentSeqNum: 2,
      stopTime: T0 + 2,
      result: { value: 'errored' },
    });
    send('s', { phase: 'start', type: 'Testcase', seqNum: 4, parentSeqNum: 2, id: 'tc', startTime: T0 + 2 });
    send('s', {
      phase: 'stop',
      type: 'Testcase',
      seqNum: 4,
      parentSeqNum: 2,
      stopTime: T0 + 3,
      result: { value: 'passed' },
    });
    send('s', { phase: 'stop', type: 'Task', seqNum: 2, parentSeqNum: 1, stopTime: T0 + 4 });
    send('s', { phase: 'start', type: 'Plugin', seqNum: 5, parentSeqNum: 1, id: 'Q', startTime: T0 + 4 });
    send('s', {
      phase: 'stop',
      type: 'Plugin',
      seqNum: 5,
      parentSeqNum: 1,
      stopTime: T0 + 5,
      result: { value: 'failed' },
    });
    send('s', { phase: 'stop', type: 'TestSuite', seqNum: 1, stopTime: T0 + 6 });
    expect(sink.bySeq(3).result.value).toBe('errored');
    expect(sink.bySeq(2).result.value).toBe('passed');
    expect(sink.bySeq(1).result.value).toBe('passed');
    expect(sink.jobs[0]?.result).toBe('passed');
  });

  it('counts children held while their parent was unseen (attached mid-job) in its roll-up', () => {
    const { sink, send, tracker } = setup();
    // Attached after the suite and task started: their init/start events were never seen.
    const job = realExampleJob().filter((e) => !(e.phase !== 'stop' && e.seqNum <= 2));
    for (const event of job) send('s', event);
    expect(tracker.stats().heldOrphans).toBe(0);
    expect(sink.bySeq(2).result).toEqual({ value: 'aborted' });
    expect(sink.bySeq(1).result).toEqual({ value: 'aborted' });
    expect(sink.jobs[0]?.result).toBe('aborted');
    for (const s of sink.finished) expect(s.orphan, `orphan ${s.seqNum}`).toBe(false);
  });

  it('names the job from start_testsuite, keeps the run id as jobId, and carries fullid', () => {
    const { sink, send } = setup();
    for (const event of realExampleJob()) send('s', event);
    const runId = `${RUN}@${new Date(T0 + 2).toISOString()}`;
    for (const s of [...sink.finished, ...sink.jobs]) {
      expect(s.job).toEqual({ jobId: RUN, jobName: 'job', runId, traceId: traceIdFor(runId) });
    }
    expect(sink.bySeq(8).fullid).toBe('ExampleTask.TcPass.test_steps.STEP 1');
    expect(sink.bySeq(9).fullid).toBe('ExampleTask.TcPass.test_steps.STEP 1.STEP 1.1');
    expect(sink.bySeq(2).fullid).toBe('ExampleTask');
    expect(sink.bySeq(1).fullid).toBe(RUN);
  });

  it("derives the name from easypy's run id when no start_ or stop_ names the job", () => {
    const now = T0 + 10_000;
    const { sink, send, tracker } = setup(now);
    // Only the init (its name is the run id) before the stream ends.
    const [init] = realExampleJob();
    send('s', init as SectionEvent);
    send('s', {
      phase: 'stop',
      type: 'Testcase',
      seqNum: 5,
      parentSeqNum: 1,
      stopTime: T0,
      result: { value: 'passed' },
    });
    tracker.endStream('s');
    expect(sink.jobs[0]?.job).toMatchObject({ jobId: RUN, jobName: 'job' });
    // An init name that is not the id is a name; an id without easypy's suffix is its own name.
    const named = setup();
    named.send('s', {
      phase: 'init',
      type: 'TestSuite',
      seqNum: 1,
      id: 'bgp.2024May01_12:00:00.000001',
      name: 'bgp',
    });
    named.send('s', {
      phase: 'start',
      type: 'TestSuite',
      seqNum: 1,
      id: 'bgp.2024May01_12:00:00.000001',
      startTime: T0,
    });
    named.send('s', {
      phase: 'stop',
      type: 'TestSuite',
      seqNum: 1,
      stopTime: T0 + 1,
      result: { value: 'passed' },
    });
    expect(named.sink.jobs[0]?.job.jobName).toBe('bgp');
    const plain = setup();
    runJob(plain.send);
    expect(plain.sink.jobs[0]?.job).toMatchObject({ jobId: 'job1', jobName: 'job1' });
    const unknown = setup();
    unknown.send('s', { phase: 'stop', type: 'Step', seqNum: 9, stopTime: T0, result: { value: 'passed' } });
    unknown.tracker.endStream('s');
    expect(unknown.sink.jobs[0]?.job).toMatchObject({ jobId: 'unknown', jobName: 'unknown' });
  });
});
