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
      expect(s.job).toEqual({ jobId: 'job1', runId, traceId });
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
    expect(sink.bySeq(9)).toMatchObject({
      startTime: T0,
      stopTime: T0 + 500,
      orphan: true,
      started: false,
      task: 'unknown',
    });
    expect(sink.bySeq(11)).toMatchObject({ startTime: T0 + 650, stopTime: T0 + 900, runtime: 0.25 });
    expect(sink.started).toHaveLength(0);
    tracker.endStream('s');
    expect(sink.jobs).toHaveLength(1);
    expect(sink.jobs[0]?.job.jobId).toBe('unknown');
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
    expect(tracker.stats()).toEqual({ streams: 1, openSections: 3 });
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
    expect(tracker.stats()).toEqual({ streams: 0, openSections: 0 });
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
