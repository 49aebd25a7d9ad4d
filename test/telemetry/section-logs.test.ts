// The log excerpt on a failed section's span: the confined reader (paths that leave runinfo, symlinks, a FIFO,
// a 10 GB sparse file), the tail cut on a line boundary, and the sink that holds a section only for its read.
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  ftruncateSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runIdFor, spanIdFor, traceIdFor } from '../../src/events/ids.js';
import type {
  FinishedSection,
  JobInfo,
  JobSummary,
  ResultValue,
  SectionSink,
} from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import {
  readLogExcerpt,
  SectionLogSink,
  tailOfText,
  tailOnLineBoundary,
  type SectionLogMode,
  type SectionLogOutcome,
} from '../../src/telemetry/section-logs.js';
import { encodeTraceRequest } from '../../src/telemetry/otlp-encoder.js';
import { sectionToSpan } from '../../src/telemetry/spans.js';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { decodeExportTraceServiceRequest } from '../helpers/otlp-receiver.js';

let dir: string;
let runinfo: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'section-logs-'));
  runinfo = join(dir, 'runinfo', 'job.2026Dec02_16:18:03.912790');
  mkdirSync(runinfo, { recursive: true });
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

const LINES = [
  '%AETEST-INFO: Starting section t\n',
  '%SCRIPT-ERROR: Gi0/1 is down\n',
  '%AETEST-ERROR: Failed reason: down\n',
];
const LOG = LINES.join('');

describe('readLogExcerpt', () => {
  it("reads exactly the section's slice of its log file", async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), 'before\n' + LOG + 'after\n');
    const result = await readLogExcerpt(runinfo, { file: 'TaskLog.T', begin: 7, size: LOG.length }, 4096);
    expect(result).toEqual({ ok: true, text: LOG });
  });

  it('keeps the tail, cut after a line break, within the byte bound', async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    const bound = LINES[1]!.length + LINES[2]!.length + 5;
    const result = await readLogExcerpt(runinfo, { file: 'TaskLog.T', begin: 0, size: LOG.length }, bound);
    expect(result).toEqual({ ok: true, text: LINES[1]! + LINES[2]! });
    // A bound that ends exactly on a line start keeps that whole line.
    const exact = await readLogExcerpt(
      runinfo,
      { file: 'TaskLog.T', begin: 0, size: LOG.length },
      LINES[1]!.length + LINES[2]!.length,
    );
    expect(exact).toEqual({ ok: true, text: LINES[1]! + LINES[2]! });
  });

  it('cuts one line longer than the bound at a character boundary, as valid UTF-8', async () => {
    const line = 'é'.repeat(300) + '\n';
    writeFileSync(join(runinfo, 'TaskLog.T'), line);
    const result = await readLogExcerpt(
      runinfo,
      { file: 'TaskLog.T', begin: 0, size: Buffer.byteLength(line) },
      101,
    );
    expect(result.ok).toBe(true);
    const text = result.ok ? result.text : '';
    expect(text).toBe('é'.repeat(50) + '\n');
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(101);
  });

  it('takes an absolute path inside the runinfo directory and a symlink that stays inside', async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    symlinkSync('TaskLog.T', join(runinfo, 'link'));
    const range = { begin: 0, size: LOG.length };
    expect(await readLogExcerpt(runinfo, { ...range, file: join(runinfo, 'TaskLog.T') }, 4096)).toEqual({
      ok: true,
      text: LOG,
    });
    expect(await readLogExcerpt(runinfo, { ...range, file: 'link' }, 4096)).toEqual({ ok: true, text: LOG });
  });

  it('refuses paths that leave the runinfo directory', async () => {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'root:x:0:0\n');
    symlinkSync(secret, join(runinfo, 'out'));
    mkdirSync(join(runinfo, 'sub'));
    symlinkSync(dir, join(runinfo, 'sub', 'up'));
    for (const file of [
      '../../secret',
      '../../../../../../etc/passwd',
      '/etc/passwd',
      secret,
      'out',
      'sub/up/secret',
      'a\0b',
    ]) {
      const result = await readLogExcerpt(runinfo, { file, begin: 0, size: 100 }, 4096);
      expect(result, file).toMatchObject({ ok: false, outcome: 'refused' });
    }
  });

  it('refuses a FIFO without blocking on it, and a directory', async () => {
    execFileSync('mkfifo', [join(runinfo, 'fifo')]);
    const fifo = await readLogExcerpt(runinfo, { file: 'fifo', begin: 0, size: 100 }, 4096);
    expect(fifo).toMatchObject({
      ok: false,
      outcome: 'refused',
      detail: expect.stringContaining('not a regular file'),
    });
    const sub = await readLogExcerpt(runinfo, { file: '.', begin: 0, size: 100 }, 4096);
    expect(sub).toMatchObject({ ok: false, outcome: 'refused' });
  });

  it('reads at most the bound of a 10 GB sparse file whatever size the event claims', async () => {
    const path = join(runinfo, 'TaskLog.Huge');
    const fd = openSync(path, 'w');
    const size = 10 * 1024 ** 3;
    ftruncateSync(fd, size - LOG.length);
    writeSync(fd, LOG, size - LOG.length);
    closeSync(fd);
    const bound = LINES[1]!.length + LINES[2]!.length;
    const result = await readLogExcerpt(runinfo, { file: 'TaskLog.Huge', begin: 0, size: 2 ** 50 }, bound);
    expect(result).toEqual({ ok: true, text: LINES[1]! + LINES[2]! });
    // With the file's real size as the claim too; one byte less keeps only the last line.
    const smaller = await readLogExcerpt(runinfo, { file: 'TaskLog.Huge', begin: 0, size: size }, bound - 1);
    expect(smaller).toEqual({ ok: true, text: LINES[2]! });
  });

  it('says the file is missing, or the slice is past its end', async () => {
    expect(await readLogExcerpt(runinfo, { file: 'TaskLog.Gone', begin: 0, size: 10 }, 4096)).toMatchObject({
      ok: false,
      outcome: 'missing',
    });
    expect(
      await readLogExcerpt(join(dir, 'archived'), { file: 'TaskLog.T', begin: 0, size: 10 }, 4096),
    ).toMatchObject({
      ok: false,
      outcome: 'missing',
    });
    writeFileSync(join(runinfo, 'TaskLog.T'), 'short\n');
    expect(await readLogExcerpt(runinfo, { file: 'TaskLog.T', begin: 100, size: 10 }, 4096)).toMatchObject({
      ok: false,
      outcome: 'empty',
    });
  });
});

describe('tail cuts', () => {
  it('cut strings by UTF-8 bytes on a line boundary', () => {
    expect(tailOfText('one\ntwo\nthree\n', 10)).toBe('two\nthree\n');
    expect(tailOfText('one\ntwo\nthree\n', 9)).toBe('three\n');
    expect(tailOfText('short', 10)).toBe('short');
    expect(tailOnLineBoundary(Buffer.from('abc\ndef\n'), 100)).toBe('abc\ndef\n');
    // A cut inside a 4-byte character skips its continuation bytes.
    expect(tailOnLineBoundary(Buffer.from('x😀yz'), 4)).toBe('yz');
  });
});

const START = Date.UTC(2026, 11, 2, 16, 18, 6);

function jobInfo(runinfoDir?: string, run = 'x'): JobInfo {
  const runId = runIdFor('job.2026Dec02_16:18:03.912790', START, run);
  return {
    jobId: 'job.2026Dec02_16:18:03.912790',
    jobName: 'job',
    runId,
    traceId: traceIdFor(runId),
    ...(runinfoDir === undefined ? {} : { runinfoDir }),
  };
}

function section(
  job: JobInfo,
  seqNum: number,
  result: ResultValue,
  extra: Partial<FinishedSection> = {},
): FinishedSection {
  return {
    job,
    seqNum,
    spanId: spanIdFor(job.runId, seqNum),
    type: 'TestSection',
    id: `t${seqNum}`,
    task: 'T',
    startTime: START + seqNum,
    stopTime: START + seqNum + 1,
    runtime: 0.001,
    result: { value: result, ...(result === 'failed' ? { reason: 'Gi0/1 is down' } : {}) },
    logfile: '/tmp/elsewhere/TaskLog.T',
    logRange: { file: 'TaskLog.T', begin: 0, size: LOG.length },
    incomplete: false,
    orphan: false,
    started: true,
    ...extra,
  };
}

class Recorder implements SectionSink {
  readonly calls: string[] = [];
  readonly sections: FinishedSection[] = [];
  sectionStarted(): void {}
  sectionFinished(s: FinishedSection): void {
    this.calls.push(`section ${s.seqNum}`);
    this.sections.push(s);
  }
  jobFinished(summary: JobSummary): void {
    this.calls.push(`job ${summary.job.jobName}`);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

function sinkOf(mode: SectionLogMode, options: { maxBytes?: number; maxQueued?: number } = {}) {
  const inner = new Recorder();
  const outcomes: SectionLogOutcome[] = [];
  const sink = new SectionLogSink({
    inner,
    mode,
    maxBytes: options.maxBytes ?? 4096,
    onOutcome: (o) => outcomes.push(o),
    logger: silentLogger(),
    ...(options.maxQueued === undefined ? {} : { maxQueued: options.maxQueued }),
  });
  return { sink, inner, outcomes };
}

/** Waits (up to 2 s) for `condition`: handles close asynchronously. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const SUMMARY = (job: JobInfo): JobSummary => ({ job }) as unknown as JobSummary;

describe('SectionLogSink', () => {
  it('attaches the excerpt to failed sections only, and ends the job after them', async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    const job = jobInfo(runinfo);
    const { sink, inner, outcomes } = sinkOf('failed');
    sink.sectionFinished(section(job, 2, 'failed'));
    sink.sectionFinished(section(job, 3, 'passed'));
    sink.jobFinished(SUMMARY(job));
    // The passed section went on at once; the failed one and the job's end wait for the read.
    expect(inner.calls).toEqual(['section 3']);
    await sink.forceFlush();
    expect(inner.calls).toEqual(['section 3', 'section 2', 'job job']);
    expect(inner.sections.find((s) => s.seqNum === 2)?.logExcerpt).toBe(LOG);
    expect(inner.sections.find((s) => s.seqNum === 3)?.logExcerpt).toBeUndefined();
    expect(outcomes).toEqual(['attached']);
  });

  it('with `all` reads every section; with `none` strips what a source sent', async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    const job = jobInfo(runinfo);
    const all = sinkOf('all');
    all.sink.sectionFinished(section(job, 3, 'passed'));
    await all.sink.forceFlush();
    expect(all.inner.sections[0]?.logExcerpt).toBe(LOG);
    const none = sinkOf('none');
    none.sink.sectionFinished(section(job, 2, 'failed', { logExcerpt: 'from the bridge\n' }));
    expect(none.inner.sections[0]?.logExcerpt).toBeUndefined();
    expect(none.outcomes).toEqual([]);
  });

  it("cuts a bridge's excerpt to the bound and does not read the file", async () => {
    const job = jobInfo(runinfo);
    const { sink, inner, outcomes } = sinkOf('failed', { maxBytes: 64 });
    sink.sectionFinished(section(job, 2, 'failed', { logExcerpt: 'x'.repeat(100) + '\n' + LINES[1]! }));
    expect(inner.sections[0]?.logExcerpt).toBe(LINES[1]);
    expect(outcomes).toEqual(['forwarded']);
  });

  it('costs only the excerpt when the file is gone or the path is hostile, counted', async () => {
    const job = jobInfo(runinfo);
    const { sink, inner, outcomes } = sinkOf('failed');
    sink.sectionFinished(section(job, 2, 'failed'));
    sink.sectionFinished(
      section(job, 4, 'errored', { logRange: { file: '../../../etc/shadow', begin: 0, size: 10 } }),
    );
    sink.jobFinished(SUMMARY(job));
    await sink.forceFlush();
    expect(inner.calls.sort()).toEqual(['job job', 'section 2', 'section 4']);
    expect(inner.sections.every((s) => s.logExcerpt === undefined)).toBe(true);
    expect(outcomes.sort()).toEqual(['missing', 'refused']);
  });

  it('passes a section without runinfo (HTTP ingest) or range straight on', () => {
    const { sink, inner, outcomes } = sinkOf('failed');
    sink.sectionFinished(section(jobInfo(), 2, 'failed'));
    sink.sectionFinished(section(jobInfo(runinfo), 3, 'failed', { logRange: undefined }));
    expect(inner.calls).toEqual(['section 2', 'section 3']);
    expect(outcomes).toEqual([]);
  });

  /** Descriptors this process has open on files in `dir`. */
  function openFdsIn(dir: string): number {
    const real = realpathSync(dir);
    return readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(`${real}/`);
      } catch {
        return false;
      }
    }).length;
  }

  it("opens a job's log file once, reads it as it grows, and closes it when the job ends", async () => {
    const log = join(runinfo, 'TaskLog.T');
    writeFileSync(log, LINES[0]!);
    const job = jobInfo(runinfo);
    const { sink, inner, outcomes } = sinkOf('failed');
    const first = { file: 'TaskLog.T', begin: 0, size: LINES[0]!.length };
    sink.sectionFinished(section(job, 2, 'failed', { logRange: first }));
    await sink.forceFlush();
    expect(openFdsIn(runinfo)).toBe(1);
    // The job logs on; the next section's slice is past what the file held when it was opened.
    appendFileSync(log, LINES[1]! + LINES[2]!);
    const rest = { file: 'TaskLog.T', begin: first.size, size: LOG.length - first.size };
    sink.sectionFinished(section(job, 3, 'failed', { logRange: rest }));
    await sink.forceFlush();
    expect(inner.sections.map((s) => s.logExcerpt)).toEqual([LINES[0], LINES[1]! + LINES[2]!]);
    expect(openFdsIn(runinfo)).toBe(1);
    sink.jobFinished(SUMMARY(job));
    await sink.forceFlush();
    expect(inner.calls.at(-1)).toBe('job job');
    expect(sink.openLogFiles).toBe(0);
    await until(() => openFdsIn(runinfo) === 0);
    expect(outcomes).toEqual(['attached', 'attached']);
  });

  it('keeps a missing log file missing for its job, and looks again for the next run', async () => {
    const { sink, outcomes } = sinkOf('failed');
    const job = jobInfo(runinfo);
    sink.sectionFinished(section(job, 2, 'failed'));
    await sink.forceFlush();
    // Easypy creates a TaskLog before any of its sections stops: one missing then stays missing.
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    sink.sectionFinished(section(job, 3, 'failed'));
    sink.jobFinished(SUMMARY(job));
    await sink.forceFlush();
    const next = jobInfo(runinfo, 'y');
    sink.sectionFinished(section(next, 2, 'failed'));
    await sink.forceFlush();
    expect(outcomes).toEqual(['missing', 'missing', 'attached']);
  });

  it('keeps at most 64 log files open, whatever the job names', async () => {
    const job = jobInfo(runinfo);
    const { sink, outcomes } = sinkOf('failed');
    for (let i = 0; i < 80; i += 1) {
      writeFileSync(join(runinfo, `TaskLog.${i}`), LOG);
      const range = { file: `TaskLog.${i}`, begin: 0, size: LOG.length };
      sink.sectionFinished(section(job, i + 2, 'failed', { logRange: range }));
    }
    await sink.forceFlush();
    expect(outcomes.filter((o) => o === 'attached')).toHaveLength(80);
    expect(sink.openLogFiles).toBe(64);
    await until(() => openFdsIn(runinfo) === 64);
    await sink.shutdown();
    await until(() => openFdsIn(runinfo) === 0);
  });

  it('drops the excerpt, not the section, when too many reads wait', async () => {
    writeFileSync(join(runinfo, 'TaskLog.T'), LOG);
    const job = jobInfo(runinfo);
    const { sink, inner, outcomes } = sinkOf('failed', { maxQueued: 2 });
    for (let seq = 2; seq < 12; seq += 1) sink.sectionFinished(section(job, seq, 'failed'));
    await sink.forceFlush();
    expect(inner.sections).toHaveLength(10);
    // Two sections may wait for their excerpt (reads under way included); the rest went on without one.
    expect(outcomes.filter((o) => o === 'attached')).toHaveLength(2);
    expect(outcomes.filter((o) => o === 'dropped')).toHaveLength(8);
  });
});

describe('the span of a failed section with its excerpt', () => {
  it('carries an exception event with the result, reason and log lines, as encoded to OTLP', () => {
    const s = section(jobInfo(runinfo), 2, 'failed', { logExcerpt: LOG });
    const span = sectionToSpan(s, resourceFromAttributes({ 'service.name': 't' }), { name: 'x' }, 4096);
    const [decoded] = decodeExportTraceServiceRequest(encodeTraceRequest([span]));
    expect(decoded?.events).toEqual([
      {
        timeUnixNano: BigInt(START + 3) * 1_000_000n,
        name: 'exception',
        attributes: {
          'exception.type': 'pyats.failed',
          'exception.message': 'Gi0/1 is down',
          'pyats.section.log': LOG,
        },
      },
    ]);
    const passed = sectionToSpan(
      section(jobInfo(runinfo), 3, 'passed', { logExcerpt: LOG }),
      resourceFromAttributes({}),
      { name: 'x' },
      4096,
    );
    expect(passed.events).toEqual([
      expect.objectContaining({ name: 'pyats.section.log', attributes: { 'pyats.section.log': LOG } }),
    ]);
    expect(
      sectionToSpan(section(jobInfo(), 4, 'failed'), resourceFromAttributes({}), { name: 'x' }, 4096).events,
    ).toEqual([]);
  });
});
